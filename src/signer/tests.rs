//! Unit tests: the layer driven with `service_fn` and `oneshot`.
