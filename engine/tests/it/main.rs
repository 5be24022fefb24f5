//! Integration tests of the engine: one binary (see STYLE.md), one module per concern.

mod common;
mod props;
mod reference;
mod rules;
mod vectors;
