//! HTTP API on a unix socket with the Docker Engine API shapes.
