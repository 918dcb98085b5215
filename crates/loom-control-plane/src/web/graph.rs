//! A bead's dependency neighbourhood as an SVG drawn on the server (no script): what it waits on
//! to the left (upstream, two levels), what waits on it to the right (downstream, two levels),
//! each node a link to its bead.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

use loom_domain::{Bead, BeadId, Status};

/// Levels drawn on each side.
const DEPTH: i32 = 2;
/// Nodes drawn per level; the rest are counted in a "+N" node.
const PER_LEVEL: usize = 8;
const NODE_W: i32 = 150;
const NODE_H: i32 = 30;
const GAP_X: i32 = 40;
const GAP_Y: i32 = 12;

/// The SVG, or an empty string when the bead has no dependency either way. `beads` holds the
/// beads that may appear (its project's, plus blockers elsewhere); `waiting` maps a bead to the
/// beads blocked by it.
pub(crate) fn svg(center: &Bead, beads: &HashMap<BeadId, Bead>, waiting: &HashMap<BeadId, Vec<BeadId>>) -> String {
    let mut levels: Vec<(i32, Vec<BeadId>, usize)> = vec![(0, vec![center.id.clone()], 0)];
    let mut seen: HashSet<BeadId> = [center.id.clone()].into();
    let mut edges: Vec<(BeadId, BeadId)> = Vec::new(); // (blocker, waiting)
    for direction in [-1, 1] {
        let mut frontier = vec![center.id.clone()];
        for step in 1..=DEPTH {
            let mut next = Vec::new();
            let mut hidden = 0;
            for id in &frontier {
                let neighbours: Vec<BeadId> = if direction < 0 {
                    beads.get(id).map(|b| b.blocked_by.clone()).unwrap_or_default()
                } else {
                    waiting.get(id).cloned().unwrap_or_default()
                };
                for n in neighbours {
                    if direction < 0 {
                        edges.push((n.clone(), id.clone()))
                    } else {
                        edges.push((id.clone(), n.clone()))
                    }
                    if seen.contains(&n) {
                        continue;
                    }
                    if next.len() < PER_LEVEL {
                        seen.insert(n.clone());
                        next.push(n);
                    } else {
                        hidden += 1;
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            levels.push((direction * step, next.clone(), hidden));
            frontier = next;
        }
    }
    if levels.len() == 1 {
        return String::new();
    }
    levels.sort_by_key(|(level, _, _)| *level);
    let min = levels.first().map_or(0, |l| l.0);
    let rows = levels.iter().map(|(_, ids, hidden)| ids.len() + usize::from(*hidden > 0)).max().unwrap_or(1) as i32;
    let cols = levels.len() as i32;
    let width = cols * NODE_W + (cols - 1) * GAP_X;
    let height = rows * NODE_H + (rows - 1) * GAP_Y;
    let mut pos: HashMap<BeadId, (i32, i32)> = HashMap::new();
    for (level, ids, _) in &levels {
        let x = (level - min) * (NODE_W + GAP_X);
        let top = (height - (ids.len() as i32 * (NODE_H + GAP_Y) - GAP_Y)) / 2;
        for (i, id) in ids.iter().enumerate() {
            pos.insert(id.clone(), (x, top + i as i32 * (NODE_H + GAP_Y)));
        }
    }
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="graph" viewBox="-2 -2 {} {}" role="group" aria-label="Dependency graph of {}">"#,
        width + 4,
        height + 4,
        center.id
    );
    let mut drawn = HashSet::new();
    for (from, to) in &edges {
        if let (Some(a), Some(b)) = (pos.get(from), pos.get(to))
            && drawn.insert((from.clone(), to.clone()))
        {
            let _ = write!(
                out,
                r#"<line x1="{}" y1="{}" x2="{}" y2="{}"/>"#,
                a.0 + NODE_W,
                a.1 + NODE_H / 2,
                b.0,
                b.1 + NODE_H / 2
            );
        }
    }
    for (level, ids, hidden) in &levels {
        let side = match level.signum() {
            -1 => "up",
            0 => "self",
            _ => "down",
        };
        for id in ids {
            let (x, y) = pos[id];
            let bead = beads.get(id).or((id == &center.id).then_some(center));
            let closed = bead.is_some_and(|b| b.status == Status::Closed);
            let title = bead.map(|b| b.title.as_str()).unwrap_or("");
            let label: String = format!("{id} {title}").chars().take(22).collect();
            let _ = write!(
                out,
                r#"<a href="/ui/beads/{id}" class="{side}{closed}"><title>{full}</title><rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="4"/><text x="{tx}" y="{ty}">{label}</text></a>"#,
                id = escape(id.as_str()),
                closed = if closed { " closed" } else { "" },
                full = escape(&format!("{id}: {title}")),
                tx = x + 6,
                ty = y + NODE_H / 2 + 4,
                label = escape(&label),
            );
        }
        if *hidden > 0 {
            let x = (level - min) * (NODE_W + GAP_X);
            let y = height - NODE_H;
            let _ = write!(out, r#"<text x="{}" y="{}">+{hidden} more</text>"#, x + 6, y + NODE_H / 2 + 4);
        }
    }
    out.push_str("</svg>");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::Utc;
    use loom_domain::{NewBead, ProjectId};

    /// A bead as the store returns it, for the web module's tests.
    pub(crate) fn bead(id: &str, title: &str, blocked_by: &[&str], status: Status) -> Bead {
        let now = Utc::now();
        let new = NewBead::new(ProjectId::parse("demo").unwrap(), title);
        Bead {
            id: BeadId::parse(id).unwrap(),
            project_id: new.project_id,
            title: new.title,
            description: String::new(),
            bead_type: new.bead_type,
            priority: new.priority,
            status,
            assignee: None,
            tags: vec![],
            context: Default::default(),
            parent: None,
            blocked_by: blocked_by.iter().map(|b| BeadId::parse(b).unwrap()).collect(),
            attempts: 0,
            last_error: None,
            close_reason: None,
            dispatch_id: None,
            lease_expires_at: None,
            started_at: None,
            started_by: None,
            not_before: None,
            created_at: now,
            updated_at: now,
            closed_at: None,
            version: 1,
        }
    }

    #[test]
    fn the_graph_draws_upstream_left_and_downstream_right() {
        // dm-1 ← dm-2 ← dm-3 ← dm-4, and an unrelated dm-9; centred on dm-3.
        let beads: HashMap<BeadId, Bead> = [
            bead("dm-1", "base", &[], Status::Closed),
            bead("dm-2", "middle", &["dm-1"], Status::Open),
            bead("dm-3", "<centre>", &["dm-2"], Status::Open),
            bead("dm-4", "top", &["dm-3"], Status::Open),
            bead("dm-9", "unrelated", &[], Status::Open),
        ]
        .into_iter()
        .map(|b| (b.id.clone(), b))
        .collect();
        let mut waiting: HashMap<BeadId, Vec<BeadId>> = HashMap::new();
        for b in beads.values() {
            for x in &b.blocked_by {
                waiting.entry(x.clone()).or_default().push(b.id.clone());
            }
        }
        let center = &beads[&BeadId::parse("dm-3").unwrap()];
        let svg = svg(center, &beads, &waiting);
        let x_of = |id: &str| {
            let at = svg.find(&format!("href=\"/ui/beads/{id}\"")).unwrap_or_else(|| panic!("{id} drawn: {svg}"));
            let rect = &svg[at..];
            let x = &rect[rect.find("<rect x=\"").unwrap() + 9..];
            x[..x.find('"').unwrap()].parse::<i32>().unwrap()
        };
        assert!(x_of("dm-1") < x_of("dm-2") && x_of("dm-2") < x_of("dm-3") && x_of("dm-3") < x_of("dm-4"), "{svg}");
        assert!(!svg.contains("dm-9"), "only the neighbourhood is drawn");
        assert!(
            svg.contains("class=\"up closed\"") && svg.contains("class=\"self\"") && svg.contains("class=\"down\"")
        );
        assert!(svg.contains("&lt;centre&gt;") && !svg.contains("<centre>"), "titles are escaped");
        assert_eq!(svg.matches("<line").count(), 3);
        assert!(super::svg(&beads[&BeadId::parse("dm-9").unwrap()], &beads, &waiting).is_empty());
    }
}
