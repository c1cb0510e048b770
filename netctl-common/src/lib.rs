//! Map keys and values shared by netctl's eBPF programs and its daemon: the single
//! source of truth for every map layout.
#![no_std]
