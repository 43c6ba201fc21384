//! The pipeline's primitives: the bounded [`channel`] on every edge, the
//! [`fanout`] that is a component's output, and the [`metrics`] registry.
//! The graph they make is built and run in `topology`.

pub mod channel;
pub mod fanout;
pub mod metrics;
