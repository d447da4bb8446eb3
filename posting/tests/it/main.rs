//! The posting service on real databases (SQLite, and a private
//! PostgreSQL server) against a fake X that speaks X's documented shapes.
//! Every scenario runs on both databases.

mod analytics;
mod api;
mod dispatcher;
mod oauth;
mod recurrence;
mod support;
mod webhooks;
