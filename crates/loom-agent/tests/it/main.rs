//! Integration tests of the project agent against real git repositories, a real (scripted)
//! chat completions server, the embedded bus and the real NATS at `LOOM_NATS_URL`.

mod bench;
mod bus;
mod control_plane;
mod delivery;
mod hardening;
mod llm;
mod personas;
mod results;
mod shell;
mod signature;
mod support;
mod system;
