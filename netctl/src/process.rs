//! TODO(module owner): process.
