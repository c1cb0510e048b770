//! TODO(module owner): netlink.
