//! The one rider a forward pass can carry besides its tensors: a shape trace and a planted
//! fault. Only the readable path consults it, so a call that carries either runs the readable
//! path ([`super::attention_path`]): the shapes a trace records are those of the tensors
//! actually computed, and a planted bug sits in the very lines a learner reads.
//!
//! Two types implement [`Instrumentation`]:
//!
//! | type              | records            | a check that fails                      |
//! |-------------------|--------------------|-----------------------------------------|
//! | [`NoInstruments`] | nothing            | cannot happen: its error is [`Infallible`] |
//! | [`Instruments`]   | into a [`ShapeTrace`] | returns the crate's [`Error::Shape`]  |
//!
//! Every ordinary call carries [`NoInstruments`], which is why the plain `forward` of every
//! layer returns its tensor and not a `Result`: the compiler knows nothing there can fail.

use std::convert::Infallible;
use std::fmt::Display;

use burn::tensor::Tensor;

use super::fault::Fault;
use super::trace::ShapeTrace;
use crate::error::Error;

/// What a layer reports as it computes, and the bug it was asked to make (see the module docs).
pub trait Instrumentation {
    /// What a failed check returns; [`Infallible`] where no check can fail.
    type Error;

    /// Whether this call carries a trace or a fault (it then runs the readable path).
    fn is_active(&self) -> bool;

    /// The bug planted on purpose, if any (see [`super::fault`]).
    fn fault(&self) -> Option<Fault>;

    /// Record that stage `name` (inside the current scope) produced a tensor of `shape`.
    fn record(&mut self, name: &str, shape: &[usize]);

    /// Keep a layer's attention weights, `[B, H, T, S]`, when the trace keeps them.
    fn keep_weights(&mut self, weights: &Tensor<4>);

    /// Prefix every stage recorded until the matching [`Instrumentation::leave`] with `scope`.
    fn enter(&mut self, scope: impl Display);

    /// Undo the last [`Instrumentation::enter`].
    fn leave(&mut self);

    /// A check that only a planted fault can fail: `Ok` when `holds`, otherwise the error
    /// `refusal` describes.
    ///
    /// # Errors
    /// `refusal()` when the check does not hold.
    fn check(&self, holds: bool, refusal: impl FnOnce() -> Error) -> Result<(), Self::Error>;
}

/// What every ordinary forward pass carries: no trace, no fault.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoInstruments;

impl Instrumentation for NoInstruments {
    type Error = Infallible;

    fn is_active(&self) -> bool {
        false
    }

    fn fault(&self) -> Option<Fault> {
        None
    }

    fn record(&mut self, _: &str, _: &[usize]) {}

    fn keep_weights(&mut self, _: &Tensor<4>) {}

    fn enter(&mut self, _: impl Display) {}

    fn leave(&mut self) {}

    fn check(&self, holds: bool, refusal: impl FnOnce() -> Error) -> Result<(), Infallible> {
        // Without a planted fault every shape is right by construction; a failure here is a
        // bug in the crate, which debug builds (and the tests) catch.
        debug_assert!(holds, "{}", refusal());
        Ok(())
    }
}

/// A shape trace to record into and a fault to plant, either or both.
#[derive(Debug, Default)]
pub struct Instruments<'a> {
    trace: Option<&'a mut ShapeTrace>,
    fault: Option<Fault>,
}

impl<'a> Instruments<'a> {
    /// Record into `trace` (when given) and plant `fault` (when given).
    pub fn new(trace: Option<&'a mut ShapeTrace>, fault: Option<Fault>) -> Self {
        Self { trace, fault }
    }

    /// Record every stage's shape into `trace`.
    pub fn with_trace(trace: &'a mut ShapeTrace) -> Self {
        Self::new(Some(trace), None)
    }

    /// Plant `fault`.
    pub fn with_fault(fault: Fault) -> Self {
        Self::new(None, Some(fault))
    }
}

impl Instrumentation for Instruments<'_> {
    type Error = Error;

    fn is_active(&self) -> bool {
        self.trace.is_some() || self.fault.is_some()
    }

    fn fault(&self) -> Option<Fault> {
        self.fault
    }

    fn record(&mut self, name: &str, shape: &[usize]) {
        if let Some(trace) = self.trace.as_deref_mut() {
            trace.record(name, shape);
        }
    }

    fn keep_weights(&mut self, weights: &Tensor<4>) {
        if let Some(trace) = self.trace.as_deref_mut() {
            trace.record_weights("weights", weights);
        }
    }

    fn enter(&mut self, scope: impl Display) {
        if let Some(trace) = self.trace.as_deref_mut() {
            trace.enter(&scope.to_string());
        }
    }

    fn leave(&mut self) {
        if let Some(trace) = self.trace.as_deref_mut() {
            trace.leave();
        }
    }

    fn check(&self, holds: bool, refusal: impl FnOnce() -> Error) -> Result<(), Error> {
        if holds { Ok(()) } else { Err(refusal()) }
    }
}

/// The check that a tensor about to enter `stage` has the shape it needs there, so a planted
/// fault ends in the crate's error naming both shapes and the usual cause, not in a backend's
/// panic inside a kernel.
///
/// # Errors
/// [`Error::Shape`] (through `instruments`) when `got` differs from `expected`.
pub fn check_shape<I: Instrumentation>(
    instruments: &I,
    stage: &str,
    got: &[usize],
    expected: &[usize],
    cause: &str,
) -> Result<(), I::Error> {
    instruments.check(got == expected, || Error::Shape {
        stage: stage.into(),
        got: format!("{got:?}"),
        expected: format!("{expected:?}"),
        cause: cause.into(),
    })
}
