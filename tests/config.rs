//! Bad configurations are errors that say what is wrong, never panics.

mod common;

use common::device;
use tinygpt::{Error, GptConfig};

fn config_error(config: GptConfig) -> String {
    match config.init(&device()) {
        Err(Error::Config(message)) => message,
        Err(other) => panic!("expected a config error, got {other}"),
        Ok(_) => panic!("expected a config error, got a model"),
    }
}

#[test]
fn d_model_not_divisible_by_n_heads_is_a_config_error() {
    let message = config_error(GptConfig::new(10).with_d_model(30).with_n_heads(4));
    assert!(message.contains("divisible"), "{message}");
    assert!(message.contains("try n_heads = 3"), "{message}");
}

#[test]
fn zero_sizes_are_config_errors() {
    for (config, field) in [
        (GptConfig::new(0), "vocab_size"),
        (GptConfig::new(10).with_n_layers(0), "n_layers"),
        (GptConfig::new(10).with_max_seq_len(0), "max_seq_len"),
        (GptConfig::new(10).with_n_heads(0), "n_heads"),
        (GptConfig::new(10).with_d_model(0), "d_model"),
    ] {
        let message = config_error(config);
        assert!(message.contains(field), "{field}: {message}");
    }
}

#[test]
fn dropout_outside_zero_to_one_is_a_config_error() {
    let message = config_error(GptConfig::new(10).with_dropout(1.5));
    assert!(message.contains("dropout"), "{message}");
}

#[test]
fn default_config_is_the_documented_one() {
    let config = GptConfig::new(65);
    assert_eq!(
        (
            config.d_model,
            config.n_heads,
            config.n_layers,
            config.max_seq_len,
            config.dropout
        ),
        (128, 4, 4, 128, 0.0)
    );
    let json = serde_json::to_string(&config).unwrap();
    let back: GptConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, config);
}

#[test]
fn head_width_is_the_width_over_the_heads() {
    // GPT-2 small: 768 wide, 12 heads of 64.
    let gpt2_small = GptConfig::new(50257).with_d_model(768).with_n_heads(12);
    assert_eq!(gpt2_small.head_dim(), 64);
    assert_eq!(GptConfig::new(65).head_dim(), 32);
}
