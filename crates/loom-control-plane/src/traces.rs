//! One trace per bead: the trace context of the request that created a bead, kept (in memory,
//! bounded) until the bead closes, so the task the dispatcher publishes for it later — however
//! much later, whichever loop publishes it — continues the same trace, and so do the events
//! about it. A bead whose context is not known here (created through another instance, or
//! before a restart) starts a trace of its own when it is published. Empty while trace export
//! is off.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use loom_bus::TraceContext;
use loom_telemetry::propagate::{self, Carrier};

/// Most beads remembered; the oldest is forgotten first.
const CAPACITY: usize = 100_000;

#[derive(Debug, Default)]
pub(crate) struct BeadTraces {
    inner: Mutex<Inner>,
}

/// The contexts, and the order they came in (stale entries are skipped when they come up: a
/// forgotten bead, or one remembered again later under a newer generation).
#[derive(Debug, Default)]
struct Inner {
    /// Bead → (generation, the creating request's context, the last task publish's context).
    map: HashMap<String, (u64, Carrier, Option<Carrier>)>,
    order: VecDeque<(String, u64)>,
    generation: u64,
}

impl BeadTraces {
    /// Remembers the current span's context for `bead`.
    pub(crate) fn remember_current(&self, bead: &str) {
        if !propagate::enabled() {
            return;
        }
        let carrier = propagate::current();
        if carrier.traceparent.is_none() {
            return;
        }
        let mut guard = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let inner = &mut *guard;
        inner.generation += 1;
        let generation = inner.generation;
        inner.map.insert(bead.to_owned(), (generation, carrier, None));
        inner.order.push_back((bead.to_owned(), generation));
        while inner.order.len() > CAPACITY {
            if let Some((old, generation)) = inner.order.pop_front()
                && inner.map.get(&old).is_some_and(|(g, _, _)| *g == generation)
            {
                inner.map.remove(&old);
            }
        }
    }

    /// The context of `bead`'s trace, if known.
    pub(crate) fn get(&self, bead: &str) -> Option<Carrier> {
        if !propagate::enabled() {
            return None;
        }
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).map.get(bead).map(|(_, c, _)| c.clone())
    }

    /// The bead is done: nothing more will be published for it.
    pub(crate) fn forget(&self, bead: &str) {
        if !propagate::enabled() {
            return;
        }
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).map.remove(bead);
    }

    /// A span named `name` (a producer) continuing `bead`'s trace (a root when unknown);
    /// `Span::none()` while export is off.
    pub(crate) fn producer_span(&self, bead: &str, dispatch: &str, attempt: u32) -> tracing::Span {
        if !propagate::enabled() {
            return tracing::Span::none();
        }
        let span = tracing::info_span!(
            "task.publish",
            otel.name = "publish loom.tasks",
            otel.kind = "producer",
            messaging.system = "nats",
            bead_id = bead,
            dispatch_id = dispatch,
            correlation_id = dispatch,
            attempt
        );
        let known = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).map.get(bead).cloned();
        if let Some((_, c, previous)) = known {
            propagate::set_parent(&span, c.traceparent.as_deref(), c.tracestate.as_deref());
            // A later attempt (a retry, a redispatch) is linked to the publish before it.
            if let Some(p) = previous {
                propagate::add_link(&span, p.traceparent.as_deref(), p.tracestate.as_deref());
            }
            let this = propagate::carrier_of(&span);
            if let Some(entry) = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).map.get_mut(bead)
            {
                entry.2 = Some(this);
            }
        }
        span
    }
}

/// A carrier as the bus takes it.
pub(crate) fn trace_context(c: Carrier) -> TraceContext {
    TraceContext { traceparent: c.traceparent, tracestate: c.tracestate }
}
