//! Integration-test harness.
