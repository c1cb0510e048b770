//! TODO(module owner): store.
