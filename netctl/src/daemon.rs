//! TODO(module owner): daemon.
