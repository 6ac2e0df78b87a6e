//! Head bookkeeping and the shape of every stage of a forward pass, against the table in the
//! crate docs and the README.

mod common;

use common::{both_paths, device, random_tensor, random_tokens, small_model, values};
use tinygpt::device::token_tensor;
use tinygpt::model::{merge_heads, split_heads};
use tinygpt::{ForwardOptions, MaskMode, ShapeTrace};

#[test]
fn merge_heads_inverts_split_heads_exactly() {
    let device = device();
    let x = random_tensor([2, 7, 12], 1, &device);
    let round_trip = merge_heads(split_heads(x.clone(), 3));
    // Bit-for-bit: splitting and merging only move values, they never compute.
    let (a, b) = (values(x), values(round_trip));
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
}

#[test]
fn split_heads_gives_each_head_a_contiguous_slice_of_features() {
    let device = device();
    let (batch, seq, d_model, heads) = (2, 3, 8, 2);
    let x = random_tensor([batch, seq, d_model], 2, &device);
    let flat = values(x.clone());
    let split = split_heads(x, heads);
    assert_eq!(split.dims(), [batch, heads, seq, d_model / heads]);
    let head_dim = d_model / heads;
    let out = values(split);
    for b in 0..batch {
        for h in 0..heads {
            for t in 0..seq {
                for d in 0..head_dim {
                    let got = out[((b * heads + h) * seq + t) * head_dim + d];
                    let want = flat[(b * seq + t) * d_model + h * head_dim + d];
                    assert_eq!(got, want, "b{b} h{h} t{t} d{d}");
                }
            }
        }
    }
}

#[test]
fn every_stage_has_the_documented_shape() {
    let device = device();
    let model = small_model(MaskMode::Causal, 1, &device);
    let config = model.config().clone();
    let (b, t, d, h, v) = (2, 9, config.d_model, config.n_heads, config.vocab_size);
    let dh = d / h;
    let tokens = token_tensor(&random_tokens(b * t, v, 3), b, t, &device).unwrap();

    let expected: Vec<(&str, Vec<usize>)> = vec![
        ("ids", vec![b, t]),
        ("token_embedding", vec![b, t, d]),
        ("position_embedding", vec![1, t, d]),
        ("embeddings", vec![b, t, d]),
        ("blocks.0.attn.q", vec![b, t, d]),
        ("blocks.0.attn.k", vec![b, t, d]),
        ("blocks.0.attn.v", vec![b, t, d]),
        ("blocks.0.attn.q_heads", vec![b, h, t, dh]),
        ("blocks.0.attn.k_heads", vec![b, h, t, dh]),
        ("blocks.0.attn.v_heads", vec![b, h, t, dh]),
        ("blocks.0.attn.scores", vec![b, h, t, t]),
        ("blocks.0.attn.weights", vec![b, h, t, t]),
        ("blocks.0.attn.attended", vec![b, h, t, dh]),
        ("blocks.0.attn.merged", vec![b, t, d]),
        ("blocks.0.attn.output", vec![b, t, d]),
        ("blocks.0.after_attn", vec![b, t, d]),
        ("blocks.0.output", vec![b, t, d]),
        ("blocks.1.output", vec![b, t, d]),
        ("ln_f", vec![b, t, d]),
        ("logits", vec![b, t, v]),
    ];
    // A traced call runs the readable path on either model: the stages are the tensors computed.
    for (path, model) in both_paths(model) {
        let mut trace = ShapeTrace::new();
        let options = ForwardOptions::default().with_trace(&mut trace);
        model.forward_with(tokens.clone(), options).unwrap();
        for (name, shape) in &expected {
            assert_eq!(
                trace.shape_of(name),
                Some(shape.as_slice()),
                "{path}: stage {name}"
            );
        }
    }
}

#[test]
fn cached_stages_attend_over_cached_plus_new_keys() {
    let device = device();
    let model = small_model(MaskMode::Causal, 1, &device);
    let config = model.config().clone();
    let (b, h, dh) = (2, config.n_heads, config.head_dim());
    let mut cache = model.new_cache(b, &device);
    let prompt = token_tensor(&random_tokens(b * 6, config.vocab_size, 4), b, 6, &device).unwrap();
    model.forward_cached(prompt, &mut cache).unwrap();

    let step = token_tensor(&[1, 2], b, 1, &device).unwrap();
    let mut trace = ShapeTrace::new();
    let options = ForwardOptions::default()
        .with_cache(&mut cache)
        .with_trace(&mut trace);
    model.forward_with(step, options).unwrap();
    // One new query against six cached keys plus its own.
    assert_eq!(
        trace.shape_of("blocks.1.attn.q_heads"),
        Some([b, h, 1, dh].as_slice())
    );
    assert_eq!(
        trace.shape_of("blocks.1.attn.k_heads"),
        Some([b, h, 7, dh].as_slice())
    );
    assert_eq!(
        trace.shape_of("blocks.1.attn.scores"),
        Some([b, h, 1, 7].as_slice())
    );
    assert_eq!(
        trace.shape_of("logits"),
        Some([b, 1, config.vocab_size].as_slice())
    );
}

#[test]
fn a_traced_call_runs_the_readable_path_and_keeps_every_layers_weights() {
    let device = device();
    let model = small_model(MaskMode::Causal, 1, &device);
    let config = model.config().clone();
    let (b, t) = (2, 5);
    let tokens = token_tensor(&random_tokens(b * t, config.vocab_size, 8), b, t, &device).unwrap();
    let traced_weights = |model: &tinygpt::Gpt| {
        let mut trace = ShapeTrace::with_attention_weights();
        let options = ForwardOptions::default().with_trace(&mut trace);
        let logits = model.forward_with(tokens.clone(), options).unwrap();
        let weights: Vec<Vec<f32>> = trace
            .attention_weights()
            .iter()
            .map(|(name, layer)| {
                assert_eq!(layer.dims(), [b, config.n_heads, t, t], "{name}");
                values(layer.clone())
            })
            .collect();
        assert_eq!(weights.len(), config.n_layers);
        (values(logits), weights)
    };
    // A model allowed its fast paths computes a traced call on the readable path: the same
    // logits and weights, bit for bit, as the model that may only take the readable path.
    let (fast_logits, fast_weights) = traced_weights(&model);
    let (readable_logits, readable_weights) = traced_weights(&model.clone().with_fast_paths(false));
    assert_eq!(fast_weights, readable_weights);
    assert_eq!(fast_logits, readable_logits);
    // And within rounding what the untraced fast path computes.
    let untraced = values(model.forward(tokens.clone()).unwrap());
    let diff = untraced
        .iter()
        .zip(&fast_logits)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff <= 1e-5, "traced and untraced logits differ by {diff}");
}
