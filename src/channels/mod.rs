//! Ingress: each channel receives requests of one kind, verifies them, turns them into
//! calls of functions and formats the replies. `api` is the OpenFaaS-compatible REST API
//! and the plain `/function/NAME` invocation path.

pub mod alexa;
pub mod api;
