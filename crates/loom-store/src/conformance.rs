//! The conformance suite: one set of behaviours every `Store` implementation must show. Run it
//! against an implementation with `loom_store::conformance_tests!(make)`, where
//! `async fn make() -> (Arc<dyn Store>, impl Sized)` returns a fresh, empty store and a guard
//! that cleans up when dropped.

mod beads;
mod connectors;
mod deps;
mod dispatch;
mod import;
mod misc;
mod results;
mod start;

pub use beads::*;
pub use connectors::*;
pub use deps::*;
pub use dispatch::*;
pub use import::*;
pub use misc::*;
pub use results::*;
pub use start::*;

use chrono::Utc;
use loom_domain::{Bead, BeadId, NewBead, NewProject, Priority, ProjectId};

use crate::{ClaimRequest, Store};

/// Expands to one `#[tokio::test]` per conformance case.
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(@cases $make;
            project_crud, project_validation, project_delete_refuses_running_beads,
            bead_create_and_get, bead_create_is_all_or_nothing, bead_list_filters_and_pages,
            bead_update_with_version, bead_illegal_transitions_change_nothing, close_and_reopen,
            dependencies_add_remove, dependency_cycle_rejected, dependency_missing_blocker_rejected, dependency_cycles_match_reference,
            ready_order_and_rules, ready_matches_domain_definition,
            claim_assigns_lease_outbox_and_event, create_claimed_only_when_nothing_else_is_ready, create_and_claim_takes_the_best_ready_beads, claim_by_hand, claim_skips_paused_projects, concurrent_claims_never_overlap,
            result_success_closes_and_unblocks, result_repeated_or_stale_is_ignored, result_failure_retries_then_blocks,
            results_batch_applies_in_order,
            expired_leases_are_redispatched_with_new_dispatch, extend_lease_only_for_current_dispatch,
            close_running_bead_cancels_task, block_dispatch_blocks_current_only,
            events_by_cursor, event_pages_filter_by_project, outbox_take_and_mark_sent, agents_and_counts, api_keys_by_hash,
            leases_elect_one_holder, redispatch_by_hand_cancels_and_requeues,
            queued_is_not_running, start_is_fenced_and_idempotent, a_dispatch_started_elsewhere_is_superseded,
            hand_back_gives_the_attempt_back, progress_marks_an_unreported_start, positions_only_advance,
            concurrent_starts_each_get_their_answer, results_are_kept_as_attempts,
            a_started_bead_is_assigned_to_its_agent, discovered_beads_are_created_once,
            project_delete_refuses_other_projects_dependents, token_usage_is_kept_per_attempt_and_summed_per_project,
            import_keeps_ids_statuses_times_and_is_idempotent, import_batches_are_all_or_nothing,
            connectors_are_kept_with_versions, concurrent_connector_updates_have_one_winner);
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, _guard) = $make().await;
                $crate::conformance::$case(&*store).await;
            }
        )*
    };
}

/// Creates project `id` with defaults.
pub async fn project(store: &dyn Store, id: &str) -> ProjectId {
    let id = ProjectId::parse(id).unwrap();
    store.create_project(NewProject::new(id.clone(), "/tmp/repo")).await.unwrap();
    id
}

/// Creates one bead with a title, priority and blockers.
pub async fn bead(store: &dyn Store, project: &ProjectId, title: &str, priority: i64, blocked_by: &[&BeadId]) -> Bead {
    let mut b = NewBead::new(project.clone(), title);
    b.priority = Priority::try_from(priority).unwrap();
    b.blocked_by = blocked_by.iter().map(|x| (*x).clone()).collect();
    store.create_beads(vec![b]).await.unwrap().remove(0)
}

/// A claim request for up to `max` beads with a 60 s lease.
pub fn claim_req(project: &ProjectId, max: u32) -> ClaimRequest {
    ClaimRequest {
        project: project.clone(),
        max,
        now: Utc::now(),
        lease: std::time::Duration::from_secs(60),
        claimer: "test".into(),
    }
}

/// Ids of beads, for compact assertions.
pub fn ids(beads: &[Bead]) -> Vec<String> {
    beads.iter().map(|b| b.id.to_string()).collect()
}
