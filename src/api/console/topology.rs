//! The topology as configured (read-only): regions with their upstream nodes' health as
//! the gateway's checks last saw it, and teams with their sources.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use super::auth::Signed;
use super::{Area, PageError, page};
use crate::api::AppState;

pub async fn show(State(state): State<AppState>, signed: Signed) -> Result<Response, PageError> {
    let topology = &state.services.topology;
    let health = &state.services.upstream_health;
    let content = html! {
        h1 { "Topology" }
        p.lede { "As the configuration file sets it; change it there and restart." }
        h2 { "Regions" }
        ul.cards {
            @for region in topology.regions() {
                li.card {
                    h3 { (region.name) " " small.muted { (region.id) } @if region.default { " " span.tag { "default" } } }
                    p { "Gateway " code { (region.host) ":" (region.port) } @if region.tls { " (HTTPS)" } }
                    @let nodes = health.nodes_of(&region.id);
                    @if nodes.is_empty() {
                        p.muted { "No upstream nodes." }
                    } @else {
                        ul.nodes {
                            @for node in &nodes {
                                li {
                                    @if node.healthy { span.tag.good { "healthy" } } @else { span.tag.bad { "unhealthy" } }
                                    " " code { (node.url) }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Teams" }
        @if topology.teams().is_empty() {
            p.empty { "No teams are configured: every connection reads what the organisation's ClickHouse user can." }
        }
        ul.cards {
            @for team in topology.teams() {
                li.card {
                    h3 { (team.name) " " small.muted { "#" (team.id) } }
                    @if team.sources.is_empty() {
                        p.muted { "No sources." }
                    } @else {
                        ul {
                            @for source in &team.sources {
                                li { (source.name) " " small.muted { "#" (source.id) } ": "
                                    @for t in &source.tables { code { (t) } " " } }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page(
        StatusCode::OK,
        "Topology",
        Some((&signed, Area::Topology)),
        content,
    ))
}
