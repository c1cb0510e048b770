//! TODO(module owner): endpoint.
