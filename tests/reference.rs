//! Agreement with PyTorch: the fixtures in `tests/fixtures/` were written by
//! `scripts/make_fixtures.py` (torch, run by hand) and tinygpt must reproduce their
//! outputs to 1e-5.

mod common;

use std::collections::HashMap;

use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::{Device, Tensor, TensorData};
use common::{device, max_abs_diff};
use serde::Deserialize;
use tinygpt::model::BlockConfig;
use tinygpt::model::{
    AttentionPath, CausalSelfAttention, CausalSelfAttentionConfig, Plan, Rotation,
};

const TOLERANCE: f32 = 1e-5;

#[derive(Deserialize)]
struct Fixture {
    config: HashMap<String, f64>,
    tensors: HashMap<String, Stored>,
}

#[derive(Deserialize)]
struct Stored {
    shape: Vec<usize>,
    data: Vec<f32>,
}

fn load(name: &str) -> Fixture {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{path}: {err}"))
}

impl Fixture {
    /// A size from the fixture's config.
    fn size(&self, name: &str) -> usize {
        self.config[name] as usize
    }

    fn tensor<const D: usize>(&self, name: &str, device: &Device) -> Tensor<D> {
        let stored = &self.tensors[name];
        assert_eq!(stored.shape.len(), D, "{name} has shape {:?}", stored.shape);
        Tensor::from_data(
            TensorData::new(stored.data.clone(), stored.shape.clone()),
            device,
        )
    }

    /// A PyTorch `nn.Linear` (weight `[out, in]`) as a Burn `Linear` (weight `[in, out]`).
    fn linear(&self, prefix: &str, device: &Device) -> Linear {
        Linear {
            weight: Param::from_tensor(
                self.tensor::<2>(&format!("{prefix}.weight"), device)
                    .transpose(),
            ),
            bias: Some(Param::from_tensor(
                self.tensor(&format!("{prefix}.bias"), device),
            )),
        }
    }

    fn layer_norm(&self, prefix: &str, mut norm: LayerNorm, device: &Device) -> LayerNorm {
        norm.gamma = Param::from_tensor(self.tensor(&format!("{prefix}.weight"), device));
        norm.beta = Some(Param::from_tensor(
            self.tensor(&format!("{prefix}.bias"), device),
        ));
        norm
    }

    fn attention(
        &self,
        prefix: &str,
        mut layer: CausalSelfAttention,
        device: &Device,
    ) -> CausalSelfAttention {
        layer.query = self.linear(&format!("{prefix}q_proj"), device);
        layer.key = self.linear(&format!("{prefix}k_proj"), device);
        layer.value = self.linear(&format!("{prefix}v_proj"), device);
        layer.output = self.linear(&format!("{prefix}o_proj"), device);
        layer
    }
}

/// The attention cores other than the readable one that serve several queries: the crate's
/// kernel where it runs (Burn's attention where it declines) and Burn's attention.
const FAST_CORES: [AttentionPath; 2] = [AttentionPath::CausalKernel, AttentionPath::BurnAttention];

fn assert_matches<const D: usize>(what: &str, got: Tensor<D>, want: Tensor<D>) {
    let diff = max_abs_diff(got, want);
    assert!(
        diff <= TOLERANCE,
        "{what}: max |Δ| = {diff:e} against PyTorch"
    );
}

#[test]
fn causal_attention_matches_torch_sdpa() {
    let device = device();
    for name in ["sdpa_causal.json", "sdpa_bottom_right.json"] {
        let fixture = load(name);
        let [q, k, v] = ["q", "k", "v"].map(|n| fixture.tensor::<4>(n, &device));
        let want = fixture.tensor::<4>("out", &device);
        let readable = AttentionPath::Readable.causal(q.clone(), k.clone(), v.clone());
        assert_matches(&format!("{name}, readable"), readable, want.clone());
        for path in FAST_CORES {
            let fast = path.causal(q.clone(), k.clone(), v.clone());
            assert_matches(&format!("{name}, {path:?}"), fast, want.clone());
        }
    }
}

#[test]
fn multi_head_attention_matches_torch() {
    let device = device();
    let fixture = load("mha.json");
    let layer = CausalSelfAttentionConfig::new(fixture.size("d_model"), fixture.size("n_heads"))
        .init(&device)
        .unwrap();
    let layer = fixture.attention("", layer, &device);
    let x = fixture.tensor::<3>("x", &device);
    let want = fixture.tensor::<3>("out", &device);
    let plan = Plan::sequence(x.dims()[1]);
    assert_matches(
        "fast path",
        layer.forward(x.clone(), None, &plan),
        want.clone(),
    );
    let mut readable = layer;
    readable.set_fast_paths(false);
    assert_matches("readable path", readable.forward(x, None, &plan), want);
}

#[test]
fn gpt_block_matches_torch() {
    let device = device();
    let fixture = load("block.json");
    let mut block = BlockConfig::new(fixture.size("d_model"), fixture.size("n_heads"))
        .init(&device)
        .unwrap();
    block.ln_1 = fixture.layer_norm("ln_1", block.ln_1, &device);
    block.attn = fixture.attention("attn.", block.attn, &device);
    block.ln_2 = fixture.layer_norm("ln_2", block.ln_2, &device);
    block.mlp.fc = fixture.linear("mlp.fc", &device);
    block.mlp.proj = fixture.linear("mlp.proj", &device);

    let x = fixture.tensor::<3>("x", &device);
    let plan = Plan::sequence(x.dims()[1]);
    let mut readable = block.clone();
    readable.attn.set_fast_paths(false);
    assert_matches(
        "block output",
        readable.forward(x.clone(), None, &plan),
        fixture.tensor("out", &device),
    );
    assert_matches(
        "block output, fast path",
        block.forward(x.clone(), None, &plan),
        fixture.tensor("out", &device),
    );

    // The residual stream after attention, to localise a failure.
    let after_attn = x.clone() + block.attn.forward(block.ln_1.forward(x), None, &plan);
    assert_matches(
        "after attention",
        after_attn,
        fixture.tensor("after_attn", &device),
    );
}

#[test]
fn rotary_embedding_matches_the_hugging_face_convention() {
    let device = device();
    // At positions 0.. and 1000..: the second checks the angles' precision far from 0.
    for name in ["rope_0.json", "rope_1000.json"] {
        let fixture = load(name);
        let (start, seq) = (fixture.size("start"), fixture.size("seq"));
        let positions: Vec<usize> = (start..start + seq).collect();
        let rotation = Rotation::new(
            &positions,
            1,
            fixture.size("head_dim"),
            fixture.config["theta"],
            &device,
        );
        let [q, k, v] = ["q", "k", "v"].map(|n| fixture.tensor::<4>(n, &device));
        let (q, k) = (rotation.apply(q), rotation.apply(k));
        assert_matches(
            &format!("{name}, q"),
            q.clone(),
            fixture.tensor("q_rot", &device),
        );
        assert_matches(
            &format!("{name}, k"),
            k.clone(),
            fixture.tensor("k_rot", &device),
        );
        for path in [AttentionPath::Readable].into_iter().chain(FAST_CORES) {
            assert_matches(
                &format!("{name}, attention on the rotated q, k, {path:?}"),
                path.causal(q.clone(), k.clone(), v.clone()),
                fixture.tensor("out", &device),
            );
        }
    }
}

/// The test device, and flex beside it when it is compiled in and not already the test device:
/// flex's fast path is the crate's own kernels, which the other backends do not run.
fn test_device_and_flex() -> Vec<Device> {
    let mut devices = vec![device()];
    if tinygpt::device::compiled_backends().contains(&"flex") {
        let flex = tinygpt::device::device_by_name("flex").expect("flex is compiled in");
        if flex != devices[0] {
            devices.push(flex);
        }
    }
    devices
}

#[test]
fn grouped_query_attention_matches_torch_enable_gqa() {
    // 4 query heads sharing 2 key/value heads, sharing 1 (multi-query), and 2 with RoPE.
    for (name, device) in ["gqa_2.json", "gqa_1.json", "gqa_2_rope.json"]
        .into_iter()
        .flat_map(|name| test_device_and_flex().into_iter().map(move |d| (name, d)))
    {
        let fixture = load(name);
        let name = &format!("{name} on {device:?}");
        let [d_model, n_heads, n_kv_heads, seq] =
            ["d_model", "n_heads", "n_kv_heads", "seq"].map(|n| fixture.size(n));
        let theta = fixture.config["theta"];
        // The attention core alone: grouped queries against the shared heads.
        let [q, k, v] = ["q", "k", "v"].map(|n| fixture.tensor::<4>(n, &device));
        for path in [AttentionPath::Readable].into_iter().chain(FAST_CORES) {
            assert_matches(
                &format!("{name}, attention core, {path:?}"),
                path.causal(q.clone(), k.clone(), v.clone()),
                fixture.tensor("context", &device),
            );
        }
        // The whole layer, on the readable path (keys and values repeated per group) and the
        // fast one (shared heads read in place).
        let config =
            CausalSelfAttentionConfig::new(d_model, n_heads).with_n_kv_heads(Some(n_kv_heads));
        let mut plan = Plan::sequence(seq);
        if theta > 0.0 {
            let positions: Vec<usize> = (0..seq).collect();
            let rotation = Rotation::new(&positions, 1, d_model / n_heads, theta, &device);
            plan = plan.with_rotation(rotation);
        }
        for fast in [false, true] {
            let mut layer = fixture.attention("", config.init(&device).unwrap(), &device);
            layer.set_fast_paths(fast);
            assert_matches(
                &format!("{name}, layer, fast paths {fast}"),
                layer.forward(fixture.tensor("x", &device), None, &plan),
                fixture.tensor("out", &device),
            );
        }
    }
}
