//! The causality probe: a causal model's earlier logits never depend on later tokens; every
//! leaky mask makes them depend.

mod common;

use common::{device, random_tokens, small_model, small_models_both_paths};
use tinygpt::MaskMode;
use tinygpt::leak::causality_probe;

#[test]
fn causal_model_never_lets_a_later_token_change_earlier_logits() {
    let device = device();
    for (path, model) in small_models_both_paths(MaskMode::Causal, 1, &device) {
        let tokens = random_tokens(24, model.config().vocab_size, 2);
        let report = causality_probe(&model, &tokens, &device).unwrap();
        assert_eq!(report.positions_probed, 23);
        assert!(report.is_causal(), "{path}: {report:?}");
    }
}

#[test]
fn every_leaky_mask_is_caught_by_the_probe() {
    let device = device();
    for mode in MaskMode::LEAKY {
        let model = small_model(mode, 1, &device);
        let tokens = random_tokens(24, model.config().vocab_size, 2);
        let report = causality_probe(&model, &tokens, &device).unwrap();
        assert!(report.violations > 0, "{mode}: {report:?}");
        eprintln!(
            "{mode}: {} / {} positions leak, max |Δ| {:e}",
            report.violations, report.positions_probed, report.max_leak
        );
    }
}

#[test]
fn probe_rejects_inputs_it_cannot_use() {
    let device = device();
    let model = small_model(MaskMode::Causal, 1, &device);
    assert!(causality_probe(&model, &[1], &device).is_err());
    assert!(causality_probe(&model, &[1, 999], &device).is_err());
}
