//! TODO(module owner): datapath.
