//! GitHub: the REST client behind the `Forge` trait, its authentication and its webhooks.
