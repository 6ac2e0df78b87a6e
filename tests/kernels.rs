//! The crate's kernels (`tinygpt::kernels`) against Burn's own ops they replace: forward
//! values within 1e-5, gradients of every input within 1e-4 relative, gradients against
//! finite differences on tiny cases, and a 50-step training run whose losses agree step by
//! step. Flex only: everywhere else the kernels are not used (checked too).

mod common;

use std::ops::ControlFlow;
use std::path::Path;

use burn::module::{Param, ParamId};
use burn::nn::{LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use common::random_tensor;
use tinygpt::generate::max_abs_diff;
use tinygpt::kernels::{
    bias_gelu, cross_entropy, layer_norm, linear, on_workers, runs_on, without_kernels,
};
use tinygpt::model::{AttentionPath, CausalSelfAttentionConfig, Plan, Rotation};
use tinygpt::text::{BUNDLED_CORPUS, TextDataset};
use tinygpt::train::{TrainConfig, TrainEvent, train};
use tinygpt::{GptConfig, MaskMode};

/// An op under test: takes flat inputs (reshaped inside), returns a flat output.
type Op = dyn Fn(&[Tensor<1>]) -> Tensor<1>;

fn flex() -> Device {
    Device::flex()
}

fn host(tensor: Tensor<1>) -> Vec<f32> {
    common::values(tensor)
}

fn flat(values: &[f32], device: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}

/// Random values for an input of `len` elements.
fn random(len: usize, seed: u64) -> Vec<f32> {
    host(random_tensor([len], seed, &flex()))
}

/// `op`'s output and the gradients of `Σ w ⊙ output` (random fixed `w`) for every input,
/// computed on an autodiff Flex device.
fn forward_backward(op: &Op, inputs: &[Vec<f32>]) -> (Vec<f32>, Vec<Vec<f32>>) {
    let device = flex().autodiff();
    let leaves: Vec<Tensor<1>> = inputs
        .iter()
        .map(|values| flat(values, &device).require_grad())
        .collect();
    let out = op(&leaves);
    let weights = flat(&random(out.dims()[0], 99), &device);
    let grads = (out.clone() * weights).sum().backward();
    let input_grads = leaves
        .iter()
        .map(|leaf| host(leaf.grad(&grads).expect("every input gets a gradient")))
        .collect();
    (host(out.inner()), input_grads)
}

fn max_abs(values: &[f32]) -> f32 {
    values.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// Fused against composite: forward ≤ 1e-5 absolute, every gradient ≤ 1e-4 relative to its
/// largest element.
fn assert_matches_composite(name: &str, op: &Op, inputs: &[Vec<f32>]) {
    assert_matches_composite_with_zeros(name, op, inputs, &[]);
}

/// [`assert_matches_composite`] where the inputs in `zero` have a gradient that is exactly 0
/// in exact arithmetic (both paths then hold rounding noise, and a relative comparison means
/// nothing): theirs must be below 1e-6 of the largest gradient of any input, on both paths.
fn assert_matches_composite_with_zeros(name: &str, op: &Op, inputs: &[Vec<f32>], zero: &[usize]) {
    assert!(
        runs_on(&flex().autodiff(), DType::F32),
        "the fused kernels should apply on autodiff Flex"
    );
    let (fused_out, fused_grads) = forward_backward(op, inputs);
    let (composite_out, composite_grads) = without_kernels(|| forward_backward(op, inputs));
    let forward = max_abs_diff(&fused_out, &composite_out);
    assert!(forward <= 1e-5, "{name}: forward max |Δ| = {forward}");
    let largest = composite_grads
        .iter()
        .map(|g| max_abs(g))
        .fold(0.0, f32::max);
    for (i, (fused, composite)) in fused_grads.iter().zip(&composite_grads).enumerate() {
        if zero.contains(&i) {
            let noise = max_abs(fused).max(max_abs(composite)) / largest;
            assert!(
                noise <= 1e-6,
                "{name}: gradient of input {i} should be 0, is {noise} of the largest"
            );
            continue;
        }
        let relative = max_abs_diff(fused, composite) / max_abs(composite).max(1e-12);
        assert!(
            relative <= 1e-4,
            "{name}: gradient of input {i} differs by {relative} (relative)"
        );
    }
}

/// The fused gradients against central finite differences of the fused forward (in f64 on the
/// host), on a case small enough to perturb every element.
fn assert_matches_finite_differences(name: &str, op: &Op, inputs: &[Vec<f32>]) {
    let (_, grads) = forward_backward(op, inputs);
    let device = flex();
    let weights = {
        let leaves: Vec<_> = inputs.iter().map(|v| flat(v, &device)).collect();
        random(op(&leaves).dims()[0], 99)
    };
    let objective = |inputs: &[Vec<f32>]| -> f64 {
        let leaves: Vec<_> = inputs.iter().map(|v| flat(v, &device)).collect();
        host(op(&leaves))
            .iter()
            .zip(&weights)
            .map(|(o, w)| *o as f64 * *w as f64)
            .sum()
    };
    let step = 1e-2_f32;
    for (input, grad) in grads.iter().enumerate() {
        for element in 0..inputs[input].len() {
            let mut plus = inputs.to_vec();
            plus[input][element] += step;
            let mut minus = inputs.to_vec();
            minus[input][element] -= step;
            let numeric = (objective(&plus) - objective(&minus)) / (2.0 * step as f64);
            let analytic = grad[element] as f64;
            assert!(
                (numeric - analytic).abs() <= 2e-3 + 1e-2 * numeric.abs(),
                "{name}: d/d input {input}[{element}]: finite differences {numeric}, \
                 backward {analytic}"
            );
        }
    }
}

/// Layer norm over rows of width `width`, with `γ` and `β` as inputs 1 and 2, and an ε far
/// from the default so that one ignored would show.
fn layer_norm_op(width: usize) -> impl Fn(&[Tensor<1>]) -> Tensor<1> {
    const EPS: f64 = 0.3;
    move |inputs| {
        let rows = inputs[0].dims()[0] / width;
        let mut norm = LayerNormConfig::new(width)
            .with_epsilon(EPS)
            .init(&inputs[0].device());
        norm.gamma = Param::from_tensor(inputs[1].clone());
        norm.beta = Some(Param::from_tensor(inputs[2].clone()));
        layer_norm(&norm, inputs[0].clone().reshape([2, rows / 2, width]), EPS)
            .reshape([rows * width])
    }
}

#[test]
fn layer_norm_matches_composite_and_finite_differences() {
    let width = 48;
    let inputs = [random(6 * width, 1), random(width, 2), random(width, 3)];
    assert_matches_composite("layer norm", &layer_norm_op(width), &inputs);
    let tiny = [random(4 * 5, 4), random(5, 5), random(5, 6)];
    assert_matches_finite_differences("layer norm", &layer_norm_op(5), &tiny);
}

fn bias_gelu_op(width: usize, approximate: bool) -> impl Fn(&[Tensor<1>]) -> Tensor<1> {
    move |inputs| {
        let rows = inputs[0].dims()[0] / width;
        bias_gelu(
            inputs[0].clone().reshape([rows, width]),
            inputs[1].clone(),
            approximate,
        )
        .reshape([rows * width])
    }
}

#[test]
fn bias_gelu_matches_composite_and_finite_differences_in_both_forms() {
    for (form, approximate) in [("bias + GELU", false), ("bias + tanh GELU", true)] {
        let width = 40;
        // Spread out to reach GELU's tails, where erf and tanh saturate.
        let spread: Vec<f32> = random(70 * width, 7).iter().map(|v| v * 2.5).collect();
        let inputs = [spread, random(width, 8)];
        assert_matches_composite(form, &bias_gelu_op(width, approximate), &inputs);
        let tiny = [random(3 * 4, 9), random(4, 10)];
        assert_matches_finite_differences(form, &bias_gelu_op(4, approximate), &tiny);
    }
}

fn cross_entropy_op(targets: Vec<i64>) -> impl Fn(&[Tensor<1>]) -> Tensor<1> {
    move |inputs| {
        let rows = targets.len();
        let vocab = inputs[0].dims()[0] / rows;
        let device = inputs[0].device();
        let targets =
            Tensor::<1, Int>::from_data(TensorData::new(targets.clone(), [rows]), &device);
        cross_entropy(inputs[0].clone().reshape([rows, vocab]), targets)
    }
}

#[test]
fn cross_entropy_matches_composite_and_finite_differences() {
    let (rows, vocab) = (37, 29);
    let targets: Vec<i64> = (0..rows).map(|r| (r * 7 % vocab) as i64).collect();
    // Logits far from 0 too: the log-sum-exp must not overflow.
    let logits: Vec<f32> = random(rows * vocab, 11)
        .iter()
        .map(|v| v * 4.0 + 30.0)
        .collect();
    assert_matches_composite("cross-entropy", &cross_entropy_op(targets), &[logits]);
    let tiny_targets = vec![2, 0, 3];
    assert_matches_finite_differences(
        "cross-entropy",
        &cross_entropy_op(tiny_targets),
        &[random(3 * 4, 12)],
    );
}

/// Causal attention on `[B, H, T, Dh]` queries and `[B, H_kv, S, Dh]` keys and values.
fn attention_op(shape: [usize; 6]) -> impl Fn(&[Tensor<1>]) -> Tensor<1> {
    let [batch, heads, kv_heads, queries, keys, head_dim] = shape;
    move |inputs| {
        let q = inputs[0].clone().reshape([batch, heads, queries, head_dim]);
        let k = inputs[1].clone().reshape([batch, kv_heads, keys, head_dim]);
        let v = inputs[2].clone().reshape([batch, kv_heads, keys, head_dim]);
        // The crate's kernel; with the kernels off it declines and Burn's attention runs.
        AttentionPath::CausalKernel
            .causal(q, k, v)
            .reshape([batch * heads * queries * head_dim])
    }
}

#[test]
fn causal_attention_matches_composite_and_finite_differences() {
    // As many queries as keys (training) and fewer (a prefill after a cache: bottom-right);
    // 6 query heads with 6, 2 or 1 key/value heads (the composite repeats the shared heads,
    // the kernel groups the queries instead).
    for kv_heads in [6, 2, 1] {
        for (queries, keys) in [(9, 9), (5, 12)] {
            let shape = [2, 6, kv_heads, queries, keys, 8];
            let inputs = [
                random(2 * 6 * queries * 8, 13),
                random(2 * kv_heads * keys * 8, 14),
                random(2 * kv_heads * keys * 8, 15),
            ];
            let name = format!("attention T={queries} S={keys}, {kv_heads} key/value heads");
            assert_matches_composite(&name, &attention_op(shape), &inputs);
        }
    }
    for kv_heads in [2, 1] {
        let tiny = [
            random(2 * 3 * 4, 16),
            random(kv_heads * 4 * 4, 17),
            random(kv_heads * 4 * 4, 18),
        ];
        let name = format!("attention, {kv_heads} key/value heads");
        assert_matches_finite_differences(&name, &attention_op([1, 2, kv_heads, 3, 4, 4]), &tiny);
    }
}

/// `x·W (+ b)` on `[2, rows/2, D_in]`; with `transposed` the weight input is `[D_out, D_in]`
/// and used through a transposed view (as the tied output layer uses the embedding).
fn linear_op(
    d_in: usize,
    d_out: usize,
    with_bias: bool,
    transposed: bool,
) -> impl Fn(&[Tensor<1>]) -> Tensor<1> {
    move |inputs| {
        let rows = inputs[0].dims()[0] / d_in;
        let x = inputs[0].clone().reshape([2, rows / 2, d_in]);
        let weight = if transposed {
            inputs[1].clone().reshape([d_out, d_in]).transpose()
        } else {
            inputs[1].clone().reshape([d_in, d_out])
        };
        let bias = with_bias.then(|| inputs[2].clone());
        linear(x, weight, bias).reshape([rows * d_out])
    }
}

#[test]
fn linear_matches_composite_and_finite_differences() {
    let (d_in, d_out) = (24, 40);
    for (with_bias, transposed) in [(true, false), (false, false), (false, true)] {
        let mut inputs = vec![random(10 * d_in, 31), random(d_in * d_out, 32)];
        if with_bias {
            inputs.push(random(d_out, 33));
        }
        let name = format!("linear, bias {with_bias}, transposed weight {transposed}");
        assert_matches_composite(
            &name,
            &linear_op(d_in, d_out, with_bias, transposed),
            &inputs,
        );
    }
    let tiny = [random(4 * 3, 34), random(3 * 5, 35), random(5, 36)];
    assert_matches_finite_differences("linear", &linear_op(3, 5, true, false), &tiny);
}

/// Self-attention through three projections (inputs 1-3 weights, 4-6 biases) on
/// `[B, T, D]`, up to the merged heads (the layer's `W_O` is the identity), with
/// `heads = [H, H_kv]` query and key/value heads (the key and value projections are
/// `D -> H_kv·Dh`); with `rope`, queries and keys rotated at positions `5..5 + T`. With the
/// kernels on, the layer takes the packed kernel; off, it runs step by step on Burn's ops.
fn self_attention_op(
    shape: [usize; 3],
    heads: [usize; 2],
    rope: bool,
) -> impl Fn(&[Tensor<1>]) -> Tensor<1> {
    let [batch, seq, d] = shape;
    let head_dim = d / heads[0];
    let widths = [d, heads[1] * head_dim, heads[1] * head_dim];
    move |inputs| {
        let device = inputs[0].device();
        let projection = |i: usize| -> Linear {
            let mut layer = LinearConfig::new(d, widths[i]).init(&device);
            // `initialized` keeps the graph: the weight is a reshape of the flat input leaf.
            let weight = inputs[1 + i].clone().reshape([d, widths[i]]);
            layer.weight = Param::initialized(ParamId::new(), weight);
            layer.bias = Some(Param::initialized(ParamId::new(), inputs[4 + i].clone()));
            layer
        };
        let mut layer = CausalSelfAttentionConfig::new(d, heads[0])
            .with_n_kv_heads(Some(heads[1]))
            .init(&device)
            .expect("valid sizes");
        (layer.query, layer.key, layer.value) = (projection(0), projection(1), projection(2));
        layer.output = Linear {
            weight: Param::from_tensor(Tensor::eye(d, &device)),
            bias: None,
        };
        let mut plan = Plan::sequence(seq);
        if rope {
            let positions: Vec<usize> = (5..5 + seq).collect();
            plan = plan.with_rotation(Rotation::new(&positions, 1, head_dim, 10000.0, &device));
        }
        let x = inputs[0].clone().reshape([batch, seq, d]);
        layer.forward(x, None, &plan).reshape([batch * seq * d])
    }
}

/// Inputs for [`self_attention_op`]: x, three weights, three biases.
fn self_attention_inputs(shape: [usize; 3], heads: [usize; 2], seed: u64) -> Vec<Vec<f32>> {
    let [batch, seq, d] = shape;
    let kv_width = heads[1] * d / heads[0];
    let widths = [d, kv_width, kv_width];
    let mut inputs = vec![random(batch * seq * d, seed)];
    inputs.extend((0..3).map(|i| random(d * widths[i], seed + 1 + i as u64)));
    inputs.extend((0..3).map(|i| random(widths[i], seed + 4 + i as u64)));
    inputs
}

#[test]
fn packed_self_attention_matches_composite_and_finite_differences() {
    // Multi-head (3 of 3 key/value heads), grouped (6 query heads sharing 2) and multi-query
    // (6 sharing 1): the composite path repeats the shared heads, the kernel reads them in
    // place and sums their gradients over each group.
    for (d, heads) in [(12, [3, 3]), (24, [6, 2]), (24, [6, 1])] {
        let shape = [3, 7, d];
        let inputs = self_attention_inputs(shape, heads, 41);
        // The key bias adds the same `q·b_K` to every score of a row, which the softmax
        // removes: its gradient is exactly 0 (not once the keys are rotated: then each key's
        // bias turns with its position).
        assert_matches_composite_with_zeros(
            &format!("packed self-attention, heads {heads:?}"),
            &self_attention_op(shape, heads, false),
            &inputs,
            &[5],
        );
        assert_matches_composite(
            &format!("packed self-attention with RoPE, heads {heads:?}"),
            &self_attention_op(shape, heads, true),
            &inputs,
        );
    }
    for (d, heads) in [(4, [2, 2]), (8, [4, 2])] {
        let shape = [1, 3, d];
        let tiny = self_attention_inputs(shape, heads, 51);
        for rope in [false, true] {
            assert_matches_finite_differences(
                &format!("packed self-attention, heads {heads:?}, RoPE {rope}"),
                &self_attention_op(shape, heads, rope),
                &tiny,
            );
        }
    }
}

#[test]
fn kernels_apply_only_to_f32_on_flex() {
    assert!(runs_on(&flex(), DType::F32));
    assert!(runs_on(&flex().autodiff(), DType::F32));
    assert!(!runs_on(&flex(), DType::F16));
    assert!(!without_kernels(|| runs_on(&flex(), DType::F32)));
    // The model's passes and the training step run on rayon's workers: the setting goes along.
    assert!(!without_kernels(|| on_workers(|| runs_on(
        &flex(),
        DType::F32
    ))));
    assert!(on_workers(|| runs_on(&flex(), DType::F32)));
    for name in tinygpt::device::compiled_backends() {
        if name != "flex"
            && let Ok(device) = tinygpt::device::device_by_name(name)
        {
            assert!(
                !runs_on(&device, DType::F32),
                "{name} must take the composite path"
            );
        }
    }
}

/// The training losses of a 50-step run.
fn training_losses(dir: &Path) -> Vec<f32> {
    let seq_len = 32;
    let dataset = TextDataset::new(BUNDLED_CORPUS, seq_len).unwrap();
    let model = GptConfig::new(dataset.tokenizer().vocab_size())
        .with_d_model(48)
        .with_n_heads(3)
        .with_n_layers(2)
        .with_max_seq_len(seq_len)
        .with_mask_mode(MaskMode::Causal);
    let config = TrainConfig {
        steps: 50,
        batch_size: 8,
        seq_len,
        warmup_steps: 5,
        eval_interval: 50,
        eval_batches: 1,
        ..TrainConfig::new()
    };
    let _ = std::fs::remove_dir_all(dir);
    let mut losses = Vec::new();
    let mut observe = |event: TrainEvent| {
        if let TrainEvent::Step { loss, .. } = event {
            losses.push(loss);
        }
        ControlFlow::Continue(())
    };
    train(dir, &model, &config, &dataset, &flex(), false, &mut observe).unwrap();
    losses
}

#[test]
fn fifty_training_steps_agree_with_the_composite_ops() {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let fused = training_losses(&tmp.join("kernels_fused"));
    let composite = without_kernels(|| training_losses(&tmp.join("kernels_composite")));
    assert_eq!(fused.len(), 50);
    for (step, (f, c)) in fused.iter().zip(&composite).enumerate() {
        assert!(
            (f - c).abs() <= 1e-3,
            "step {}: fused loss {f}, composite {c}",
            step + 1
        );
    }
    assert!(
        fused[49] < fused[0] - 0.5,
        "the run should learn: {fused:?}"
    );
}
