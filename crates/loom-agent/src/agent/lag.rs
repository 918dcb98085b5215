//! The lag of the task consumer an agent reads, as `loom_bus_consumer_pending{consumer}` (tasks
//! not yet delivered) and `loom_bus_consumer_ack_pending{consumer}` (delivered, not settled):
//! JetStream's own figures for that durable consumer, read at each heartbeat (one server call),
//! so an agent in a process of its own reports what it is behind on.

use loom_bus::{Bus, Role, StreamKind};
use loom_domain::ProjectId;

pub(crate) async fn report(bus: &Bus, project: &ProjectId, role: Option<&Role>) {
    let consumer = loom_bus::agents_consumer(project, role);
    match bus.consumer_lag(StreamKind::Tasks, &consumer).await {
        Ok(lag) => {
            metrics::gauge!("loom_bus_consumer_pending", "consumer" => consumer.clone()).set(lag.num_pending as f64);
            metrics::gauge!("loom_bus_consumer_ack_pending", "consumer" => consumer).set(lag.num_ack_pending as f64);
        }
        Err(e) => tracing::debug!(%consumer, error = %e, "reading the task consumer's lag failed"),
    }
}
