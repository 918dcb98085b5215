//! System tests of the `loom` binary: `loom up` on the embedded default in a fresh directory,
//! driven through the CLI like a user would.

mod bd;
mod bench;
mod cli;
mod deploy;
mod llm;
mod projects;
mod readme;
mod sandbox;
mod serve;
mod support;
mod web;
