//! TODO(module owner): model.
