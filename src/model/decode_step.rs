//! A decode step as one kernel: the model's tensors and the plan's numbers handed to
//! [`crate::kernels::decode_step`], for the calls [`AttentionPath::decode_step_applies`] gives
//! it. It computes what [`Gpt::forward_with`] computes layer by layer (`tests/decode_step.rs`).

use burn::tensor::{Int, Tensor};

use super::attention_path::AttentionPath;
use super::cache::KvCache;
use super::gpt::Gpt;
use super::mlp::Activation;
use super::plan::Plan;
use crate::kernels::{self, StepLayer, StepModel, StepRows};

impl Gpt {
    /// The logits of a call of one new token per row after `cache`, as one kernel, when it
    /// takes the call; the cache then holds the new keys and values and has advanced.
    /// `None` (nothing written) when the call runs layer by layer instead.
    ///
    /// # Shapes
    /// - tokens: `[B, 1]`, output: `[B, 1, V]`
    pub(super) fn decode_step(
        &self,
        tokens: &Tensor<2, Int>,
        cache: &mut KvCache,
        plan: &Plan,
    ) -> Option<Tensor<3>> {
        let fast = self.blocks.iter().all(|b| b.attn.fast_paths_apply());
        if !AttentionPath::decode_step_applies(fast, &tokens.device(), plan) {
            return None;
        }
        let ids: Vec<usize> = tokens
            .to_data()
            .iter::<i64>()
            .map(|id| usize::try_from(id).unwrap_or(usize::MAX))
            .collect();
        // An id outside the vocabulary is left to the layer-by-layer path, whatever it does
        // with one, so the kernel changes nothing about such a call.
        if ids.iter().any(|&id| id >= self.config().vocab_size) {
            return None;
        }
        let batch = ids.len();
        let step = plan.cache_step();
        let first_visible = match plan.left_padding() {
            Some(pads) => pads.to_vec(),
            None => vec![0; batch],
        };
        let rows = StepRows {
            tokens: &ids,
            positions: plan.position_values(),
            slot: step.slots.start,
            visible: step.visible,
            first_visible: &first_visible,
            rotation: plan.rotation().map(|rotation| rotation.tensors()),
        };
        let layers = self
            .blocks
            .iter()
            .zip(cache.layers_mut())
            .map(|(block, layer)| StepLayer {
                ln_1: &block.ln_1,
                qkv: [&block.attn.query, &block.attn.key, &block.attn.value],
                output: &block.attn.output,
                ln_2: &block.ln_2,
                mlp: [&block.mlp.fc, &block.mlp.proj],
                approximate_gelu: block.mlp.activation() == Activation::GeluTanh,
                eps: block.layer_norm_epsilon,
                cache: layer.buffers_mut(),
            })
            .collect();
        let model = StepModel {
            token_embedding: self.token_embedding.weight.val(),
            position_embedding: self.position_embedding.as_ref().map(|p| p.weight.val()),
            layers,
            ln_f: (&self.ln_f, self.config().layer_norm_epsilon),
            lm_head: self.lm_head.as_ref(),
            heads: [self.config().n_heads, self.config().kv_heads()],
        };
        let logits = kernels::decode_step(model, &rows)?;
        cache.advance(step);
        Some(logits)
    }
}
