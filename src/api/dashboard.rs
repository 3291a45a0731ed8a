//! A one-page dashboard: repositories with their fetch health and the latest runs.

use axum::extract::State;
use axum::response::Html;

use super::{ApiError, AppState};
use crate::store::RunFilter;

pub async fn page(State(state): State<AppState>) -> Result<Html<String>, ApiError> {
    let repos = state.store.repos().await?;
    let runs = state
        .store
        .runs(&RunFilter {
            limit: 50,
            ..Default::default()
        })
        .await?;
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=utf-8><title>Tidemark</title>\
         <style>body{font:14px system-ui;margin:2em}table{border-collapse:collapse}\
         td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}\
         .succeeded{color:#107010}.failed,.timed_out,.interrupted{color:#b00020}</style></head><body>\
         <h1>Tidemark</h1><h2>Repositories</h2><table><tr><th>repo</th><th>branch</th><th>last fetch</th><th>error</th></tr>",
    );
    for repo in &repos {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&repo.name),
            escape(&repo.branch),
            repo.last_fetch_at
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
            escape(repo.last_error.as_deref().unwrap_or("")),
        ));
    }
    html.push_str("</table><h2>Runs</h2><table><tr><th>id</th><th>repo</th><th>stack</th><th>commit</th><th>kind</th><th>status</th><th>+/~/-</th></tr>");
    for run in &runs {
        let summary = run
            .change_summary()
            .map(|s| format!("+{} ~{} -{}", s.add, s.change, s.destroy))
            .unwrap_or_default();
        html.push_str(&format!(
            "<tr><td><a href=\"/api/v1/runs/{id}/logs\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{status}\">{status}</td><td>{}</td></tr>",
            escape(&run.repo),
            escape(&run.stack),
            &run.commit[..run.commit.len().min(10)],
            run.kind,
            summary,
            id = run.id,
            status = run.status,
        ));
    }
    html.push_str("</table></body></html>");
    Ok(Html(html))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
