//! AdamW as the trainer runs it: Burn's update, computed in one pass per parameter on Flex
//! ([`crate::kernels::adamw_step`]) and by Burn's own `AdamW` everywhere else.
//!
//! The state is Burn's `AdamWState`, so checkpoints written with either load into the other.

use burn::optim::{AdamW, AdamWConfig, AdamWState, AdaptiveMomentumState, LearningRate, Optimizer};
use burn::tensor::{Device, Tensor};

use crate::kernels::{self, AdamWStep};

/// AdamW with `β = (0.9, β₂)`, `ε = 1e-5` (Burn's default) and decoupled weight decay.
#[derive(Clone)]
pub struct FusedAdamW {
    betas: [f32; 2],
    epsilon: f32,
    weight_decay: f32,
    /// The same optimizer in Burn's ops, for parameters off Flex.
    burn: AdamW,
}

impl FusedAdamW {
    /// AdamW with `beta_2` and `weight_decay`.
    pub fn new(beta_2: f32, weight_decay: f32) -> Self {
        const BETA_1: f32 = 0.9;
        const EPSILON: f32 = 1e-5;
        Self {
            betas: [BETA_1, beta_2],
            epsilon: EPSILON,
            weight_decay,
            burn: AdamWConfig::new()
                .with_beta_1(BETA_1)
                .with_beta_2(beta_2)
                .with_epsilon(EPSILON)
                .with_weight_decay(weight_decay)
                .build(),
        }
    }
}

impl Optimizer for FusedAdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let amsgrad = state
            .as_ref()
            .is_some_and(|s| s.momentum.max_moment_2.is_some());
        if amsgrad || !kernels::runs_on_without_autodiff(&tensor.device(), tensor.dtype()) {
            return self.burn.step(lr, tensor, grad, state);
        }
        let (time, moments) = match state {
            Some(state) => {
                let momentum = state.momentum;
                (
                    momentum.time + 1,
                    Some([momentum.moment_1, momentum.moment_2]),
                )
            }
            None => (1, None),
        };
        let step = AdamWStep {
            betas: self.betas,
            epsilon: self.epsilon,
            lr,
            weight_decay: self.weight_decay,
            time,
        };
        let (tensor, [moment_1, moment_2]) = kernels::adamw_step(tensor, grad, moments, step);
        let momentum = AdaptiveMomentumState {
            time,
            moment_1,
            moment_2,
            max_moment_2: None,
        };
        (tensor, Some(AdamWState::new(momentum)))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        AdamW::to_device(state, device)
    }
}
