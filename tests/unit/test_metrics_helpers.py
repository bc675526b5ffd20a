"""Pure helpers of the operations surface: token accounting, bounded labels, key gauges, masked hints."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from proxy.api.admin import mask
from proxy.observability.metrics import _ModelLabels, key_state_metrics, token_counts


def test_token_counts_openai_and_anthropic_shapes():
    assert token_counts({"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}) == (12, 5)
    assert token_counts({"input_tokens": 7, "output_tokens": 3}) == (7, 3)
    assert token_counts({"output_tokens": 9}) == (0, 9)  # Anthropic message_delta
    assert token_counts({"prompt_tokens": None, "completion_tokens": True}) == (0, 0)
    assert token_counts({"prompt_tokens": -4, "completion_tokens": "5"}) == (0, 0)


def test_model_labels_are_bounded_and_printable():
    labels = _ModelLabels(limit=2)
    assert labels("a") == "a" and labels("b\n") == "b?"
    assert labels("c") == "other" and labels("a") == "a"
    assert len(labels("x" * 500)) <= 100 or labels("x" * 500) == "other"


def test_key_state_metrics_from_listing():
    keys = [
        {"id": "k_aaaaaaaaaa", "provider": "gem", "enabled": True, "usable": True, "status": "ok",
         "health": 0.75, "circuit": "half_open", "cooldowns": {"m1": 3.0, "m2": 9.0}, "weight": 2.0},
        {"id": "k_bbbbbbbbbb", "provider": "gem", "enabled": False, "usable": False, "status": "invalid",
         "health": 1.0, "circuit": "open", "cooldowns": {}, "weight": 1.0},
    ]
    registry = CollectorRegistry()

    class Collector:
        def collect(self):  # noqa: ANN202
            return key_state_metrics(keys)

    registry.register(Collector())
    text = generate_latest(registry).decode()
    assert 'keyrelay_key_enabled{key_id="k_aaaaaaaaaa",provider="gem"} 1.0' in text
    assert 'keyrelay_key_enabled{key_id="k_bbbbbbbbbb",provider="gem"} 0.0' in text
    assert 'keyrelay_key_circuit_state{key_id="k_aaaaaaaaaa",provider="gem"} 0.5' in text
    assert 'keyrelay_key_circuit_state{key_id="k_bbbbbbbbbb",provider="gem"} 1.0' in text
    assert 'keyrelay_key_cooling_models{key_id="k_aaaaaaaaaa",provider="gem"} 2.0' in text
    assert 'keyrelay_key_invalid{key_id="k_bbbbbbbbbb",provider="gem"} 1.0' in text
    assert 'keyrelay_key_health{key_id="k_aaaaaaaaaa",provider="gem"} 0.75' in text
    assert text == generate_latest(registry).decode()  # same listing, same output


def test_mask_shows_first_four_and_last_three_only():
    assert mask("AIzaSyD-example-secret-x9Q") == "AIza…x9Q"
    assert mask("AIzaFAKE-secret-123456") == "AIza…456"
    assert mask("short-key") == "…"  # would reveal most of it
    assert mask(None) is None and mask("") is None
