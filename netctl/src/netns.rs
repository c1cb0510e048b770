//! TODO(module owner): netns.
