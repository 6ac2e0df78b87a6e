//! How the heads are laid out: `split_heads` gives each head its own slice of the features,
//! `merge_heads` puts them back side by side, and `repeat_kv` gives each query head its group's
//! key/value head (grouped-query attention, written as a copy). All three only move values.

use burn::tensor::Tensor;

/// Repeat each key/value head for the `groups` query heads that share it: head `h` of the
/// result is head `h / groups` of the input, so query head `h` meets its group's keys. This is
/// what grouped-query attention means, written as a copy; the crate's kernels get the same
/// result by grouping the queries instead (see [`crate::kernels::causal_attention`]).
///
/// # Shapes
/// - x: `[B, H_kv, S, Dh]`, output: `[B, H_kv·groups, S, Dh]`
pub fn repeat_kv(x: Tensor<4>, groups: usize) -> Tensor<4> {
    if groups == 1 {
        return x;
    }
    let [batch, kv_heads, seq, head_dim] = x.dims();
    // [B, H_kv, S, Dh] -> [B, H_kv, 1, S, Dh] -> [B, H_kv, G, S, Dh] -> [B, H_kv·G, S, Dh]
    x.unsqueeze_dim::<5>(2)
        .expand([batch, kv_heads, groups, seq, head_dim])
        .reshape([batch, kv_heads * groups, seq, head_dim])
}

/// Give each of `n_heads` heads its own slice of the model dimension: head `h` gets features
/// `h·Dh .. (h+1)·Dh`.
///
/// # Shapes
/// - input: `[B, T, D]`
/// - output: `[B, H, T, Dh]` with `Dh = D / H`
///
/// # Panics
/// If `D` is not divisible by `n_heads` (configs are validated before a layer exists).
pub fn split_heads(x: Tensor<3>, n_heads: usize) -> Tensor<4> {
    let [batch, seq, d_model] = x.dims();
    assert_eq!(
        d_model % n_heads,
        0,
        "d_model {d_model} not divisible by {n_heads} heads"
    );
    x.reshape([batch, seq, n_heads, d_model / n_heads])
        .swap_dims(1, 2)
}

/// Put the heads back side by side: the inverse of [`split_heads`].
///
/// # Shapes
/// - input: `[B, H, T, Dh]`
/// - output: `[B, T, H·Dh]`
pub fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [batch, n_heads, seq, head_dim] = x.dims();
    x.swap_dims(1, 2).reshape([batch, seq, n_heads * head_dim])
}
