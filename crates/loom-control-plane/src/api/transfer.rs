//! `POST /projects/{id}/import` and `GET /projects/{id}/export`: a project's beads in and out as
//! bd JSONL, streamed both ways (see [`crate::bd`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use loom_api::{ExportQuery, ImportQuery, ImportSummary};
use loom_domain::{Bead, ProjectId};
use loom_store::{BeadFilter, PageRequest, Store};
use tokio_util::io::StreamReader;

use super::{ApiQuery, parse_id};
use crate::{Error, Shared, bd};

/// Beads per page an export reads from the store.
const EXPORT_PAGE: u32 = 500;

fn check_format(format: Option<&str>) -> Result<(), Error> {
    match format {
        None | Some("bd") => Ok(()),
        Some(other) => Err(Error::BadRequest(format!("format {other:?} is not supported: use `bd`"))),
    }
}

pub(crate) async fn import(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ImportQuery>,
    body: Body,
) -> Result<Json<ImportSummary>, Error> {
    let id = parse_id(ProjectId::parse, &id)?;
    check_format(q.format.as_deref())?;
    let project = s.store.get_project(&id).await?;
    let input = StreamReader::new(body.into_data_stream().map_err(std::io::Error::other));
    let summary = bd::import(&*s.store, &project, input, q.dangling, bd::BATCH).await?;
    s.changed();
    Ok(Json(summary))
}

pub(crate) async fn export(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> Result<Response, Error> {
    let id = parse_id(ProjectId::parse, &id)?;
    check_format(q.format.as_deref())?;
    s.store.get_project(&id).await?;
    let store = s.store.clone();
    // One page of beads per chunk of the body: never the whole project in memory.
    let pages = futures::stream::try_unfold(Some(None::<String>), move |cursor| {
        let (store, id) = (store.clone(), id.clone());
        async move {
            let Some(after) = cursor else { return Ok(None) };
            let filter = BeadFilter { project: Some(id), ..BeadFilter::default() };
            let page = store.list_beads(&filter, &PageRequest { after, limit: EXPORT_PAGE }).await?;
            let chunk = lines(&*store, &page.beads).await?;
            Ok::<_, Error>(Some((Bytes::from(chunk), page.next_cursor.map(Some))))
        }
    });
    let body = Body::from_stream(pages.map_err(|e| std::io::Error::other(e.to_string())).boxed());
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// The JSONL of `beads`, looking up the bd ids of edges added in Loom.
async fn lines(store: &dyn Store, beads: &[Bead]) -> Result<String, Error> {
    let mut bd_ids = BTreeMap::new();
    for id in beads.iter().flat_map(bd::uncovered_blockers) {
        if bd_ids.contains_key(&id) {
            continue;
        }
        let bd_id = match store.get_bead(&id).await {
            Ok(b) => bd::bd_id(&b),
            Err(loom_store::Error::NotFound { .. }) => id.to_string(),
            Err(e) => return Err(e.into()),
        };
        bd_ids.insert(id, bd_id);
    }
    let mut out = String::new();
    for line in beads.iter().filter_map(|b| bd::export_line(b, &bd_ids)) {
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}
