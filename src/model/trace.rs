//! A record of the tensors' shapes at each stage of a forward pass, for teaching (the `shapes`
//! example) and for tests that check every stage against the documented table.

use burn::tensor::Tensor;

/// One stage of a forward pass: where it is and the shape of the tensor it produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    /// Dotted path, e.g. `blocks.0.attn.scores`.
    pub name: String,
    /// The tensor's dimensions.
    pub shape: Vec<usize>,
}

/// The stages of one forward pass, in the order they were computed; optionally also every
/// layer's attention weights (for pictures of what each head looks at).
#[derive(Clone, Debug, Default)]
pub struct ShapeTrace {
    stages: Vec<Stage>,
    prefix: Vec<String>,
    keep_weights: bool,
    weights: Vec<(String, Tensor<4>)>,
}

impl ShapeTrace {
    /// An empty trace.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty trace that also keeps every attention layer's weights. A traced call runs the
    /// readable path, which materialises them (see [`super::attention_path`]).
    pub fn with_attention_weights() -> Self {
        Self {
            keep_weights: true,
            ..Self::default()
        }
    }

    /// Keep `weights` under `name` (inside the current prefix) if this trace keeps weights.
    ///
    /// # Shapes
    /// - weights: `[B, H, T, S]`
    pub fn record_weights(&mut self, name: &str, weights: &Tensor<4>) {
        if self.keep_weights {
            let path = self.path(name);
            self.weights.push((path, weights.clone()));
        }
    }

    /// Whether this trace keeps attention weights (see [`ShapeTrace::with_attention_weights`]).
    pub fn keeps_attention_weights(&self) -> bool {
        self.keep_weights
    }

    /// The attention weights kept, in layer order, each `[B, H, T, S]`.
    pub fn attention_weights(&self) -> &[(String, Tensor<4>)] {
        &self.weights
    }

    fn path(&self, name: &str) -> String {
        let mut path = self.prefix.join(".");
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(name);
        path
    }

    /// Record `shape` under `name`, inside the current prefix.
    pub fn record(&mut self, name: &str, shape: &[usize]) {
        let name = self.path(name);
        self.stages.push(Stage {
            name,
            shape: shape.to_vec(),
        });
    }

    /// Prefix every name recorded until the matching [`ShapeTrace::leave`] with `scope`.
    pub fn enter(&mut self, scope: &str) {
        self.prefix.push(scope.to_string());
    }

    /// Undo the last [`ShapeTrace::enter`].
    pub fn leave(&mut self) {
        self.prefix.pop();
    }

    /// The recorded stages.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// The shape recorded under `name`, if any.
    pub fn shape_of(&self, name: &str) -> Option<&[usize]> {
        self.stages
            .iter()
            .find(|stage| stage.name == name)
            .map(|stage| stage.shape.as_slice())
    }
}
