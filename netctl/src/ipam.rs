//! TODO(module owner): ipam.
