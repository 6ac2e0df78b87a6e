//! The failure gallery's faults (`tinygpt::faults`, `Gpt::with_fault`): each is caught by the
//! check its row of the table names, and that check passes without it.

mod common;

use burn::tensor::Tensor;
use common::{
    both_paths, device, max_abs_diff, random_tensor, random_tokens, row, small_config, small_model,
};
use tinygpt::faults::{Exhibit, Outcome, divergence, show};
use tinygpt::generate::{WindowPolicy, compare_decoding};
use tinygpt::model::{CausalSelfAttentionConfig, Fault, Instruments, Plan};
use tinygpt::{Error, Gpt, MaskMode, PositionScheme};

/// The shape error of a forward pass over `len` tokens with `fault` planted.
fn shape_error(model: &Gpt, fault: Fault, len: usize) -> (String, String, String) {
    let ids = row(&random_tokens(len, 23, 1), &device());
    match model.clone().with_fault(Some(fault)).forward(ids) {
        Err(Error::Shape {
            stage,
            got,
            expected,
            ..
        }) => (stage, got, expected),
        other => panic!(
            "{fault}: expected a shape error, got {:?}",
            other.map(|_| ())
        ),
    }
}

#[test]
fn a_key_that_is_not_transposed_fails_the_score_shape_check() {
    let model = small_model(MaskMode::Causal, 1, &device());
    // 12 tokens, heads of width 8: q [1, 4, 12, 8] needs kᵀ [1, 4, 8, 12], not k [1, 4, 12, 8].
    let (stage, got, expected) = shape_error(&model, Fault::TransposedKey, 12);
    assert!(stage.contains("q · kᵀ"), "{stage}");
    assert_eq!(
        (got.as_str(), expected.as_str()),
        ("[1, 4, 12, 8]", "[1, 4, 8, 12]")
    );
    // The check passes on the correct code.
    assert!(
        model
            .forward(row(&random_tokens(12, 23, 1), &device()))
            .is_ok()
    );
    // With as many keys as the head is wide the wrong product has the right shape: no shape
    // check can see it, only the values are wrong (what the PyTorch reference tests catch).
    // Weights drawn large, as in the fixtures, so the attention is far from uniform.
    let layer = CausalSelfAttentionConfig::new(32, 4)
        .with_init_std(0.5)
        .init(&device())
        .unwrap();
    let x = random_tensor([1, 8, 32], 2, &device());
    let plan = Plan::sequence(8);
    let mut faulty = Instruments::with_fault(Fault::TransposedKey);
    let silent = layer
        .forward_instrumented(x.clone(), None, &plan, &mut faulty)
        .expect("8 keys, width 8: the shapes fit");
    let diff = max_abs_diff(silent, layer.forward(x, None, &plan));
    assert!(
        diff > 1e-2,
        "the silent fault changed the output by only {diff}"
    );
}

#[test]
fn heads_that_are_not_merged_fail_the_output_projection_check() {
    let model = small_model(MaskMode::Causal, 2, &device());
    let (stage, got, expected) = shape_error(&model, Fault::MissingMerge, 5);
    assert!(stage.contains("W_O"), "{stage}");
    // [B, H, T, Dh] where [B, T, D] belongs.
    assert_eq!(
        (got.as_str(), expected.as_str()),
        ("[1, 4, 5, 8]", "[1, 5, 32]")
    );
}

#[test]
fn a_cache_extended_along_the_heads_axis_fails_the_append_check() {
    let device = device();
    let model = small_model(MaskMode::Causal, 3, &device);
    let faulty = model.clone().with_fault(Some(Fault::CacheWrongAxis));
    let ids = row(&random_tokens(6, 23, 3), &device);
    let mut cache = faulty.new_cache(1, &device);
    match faulty.forward_cached(ids.clone(), &mut cache) {
        Err(Error::Shape {
            stage, expected, ..
        }) => {
            assert!(stage.contains("axis 1"), "{stage}");
            assert!(expected.contains("axis 2"), "{expected}");
        }
        other => panic!("expected a shape error, got {:?}", other.map(|_| ())),
    }
    assert_eq!(cache.len(), 0, "nothing was cached");
    // Without a cache the fault has nothing to hold it; with the correct cache the append
    // check passes.
    assert!(faulty.forward(ids.clone()).is_ok());
    let mut cache = model.new_cache(1, &device);
    assert!(model.forward_cached(ids, &mut cache).is_ok());
}

#[test]
fn cache_and_position_faults_fail_cached_equals_naive() {
    let device = device();
    let prompt = random_tokens(7, 23, 4);
    for position in [PositionScheme::Learned, PositionScheme::Rope] {
        let model = small_config(MaskMode::Causal)
            .with_position(position)
            .init_seeded(5, &device)
            .unwrap();
        for (path, model) in both_paths(model) {
            // The check passes on the correct model ...
            let correct =
                compare_decoding(&model, &prompt, 12, WindowPolicy::SlideHalf, &device).unwrap();
            assert!(correct.identical_tokens && correct.max_abs_logit_diff <= 1e-4);
            let clean = divergence(&model, &prompt, 12, &device).unwrap();
            assert_eq!(clean.first_step, None, "{position:?}, {path}");
            assert_eq!(clean.cache_lens, clean.expected_cache_lens);
            for fault in [Fault::StaleCache, Fault::PositionsRestart] {
                // ... and fails with the fault: the logits part at the first decode step.
                let faulty = model.clone().with_fault(Some(fault));
                let report =
                    compare_decoding(&faulty, &prompt, 12, WindowPolicy::SlideHalf, &device)
                        .unwrap();
                assert!(
                    report.max_abs_logit_diff > 1e-4,
                    "{fault}, {position:?}, {path}: cached == naive did not notice"
                );
                let parted = divergence(&faulty, &prompt, 12, &device).unwrap();
                assert_eq!(parted.first_step, Some(1), "{fault}, {position:?}, {path}");
                // A stale cache stops growing; restarted positions leave its length right.
                let stuck = parted.cache_lens.iter().all(|&len| len == prompt.len());
                assert_eq!(
                    stuck,
                    fault == Fault::StaleCache,
                    "{fault}: {:?}",
                    parted.cache_lens
                );
            }
        }
    }
}

#[test]
fn every_exhibit_shows_what_its_row_promises() {
    let device = device();
    let model = small_model(MaskMode::Causal, 6, &device);
    let prompt = random_tokens(10, 23, 7);
    for exhibit in Exhibit::all() {
        let outcome = show(exhibit, &model, &prompt, 8, &device).unwrap();
        match (exhibit, outcome) {
            (Exhibit::Mask(mode), Outcome::Probed(report)) => {
                assert!(report.violations > 0, "{mode:?} did not leak")
            }
            (
                Exhibit::Fault(Fault::TransposedKey | Fault::MissingMerge | Fault::CacheWrongAxis),
                Outcome::Refused(Error::Shape { .. }),
            ) => {}
            (Exhibit::Fault(_), Outcome::Decoded(parted)) => assert!(parted.first_step.is_some()),
            (exhibit, outcome) => panic!("{exhibit:?}: unexpected {outcome:?}"),
        }
        assert_eq!(Exhibit::from_name(&exhibit.name()).unwrap(), exhibit);
    }
    match Exhibit::from_name("transposed-value") {
        Err(Error::Config(message)) => assert!(message.contains("stale-cache"), "{message}"),
        other => panic!("expected a config error, got {other:?}"),
    }
    // The mask exhibits keep the trained weights and change only the mask.
    let report = tinygpt::leak::causality_probe(&model, &prompt, &device).unwrap();
    assert!(report.is_causal());
}

#[test]
fn without_a_fault_the_model_runs_the_correct_code() {
    let device = device();
    let model = small_model(MaskMode::Causal, 8, &device);
    assert_eq!(model.fault(), None);
    let ids = row(&random_tokens(9, 23, 9), &device);
    let reset: Tensor<3> = model.clone().with_fault(None).forward(ids.clone()).unwrap();
    assert_eq!(max_abs_diff(reset, model.forward(ids).unwrap()), 0.0);
}
