//! The service's own log lines hold no secret. A test binary of its own: a scoped subscriber
//! (`set_default`) misses events whose callsites other tests' threads hit first, so in the
//! shared binary lines went missing at random.

#[path = "../it/logs.rs"]
mod logs;
#[allow(dead_code)]
#[path = "../it/support.rs"]
mod support;
