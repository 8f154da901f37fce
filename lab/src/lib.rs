//! Experiments that need the data pipeline and the trainer together: ablations of mixes
//! ([`ablate`]). Both the `sluice` commands and the service call them; each decides through a
//! [`ablate::Host`] how pipelines are compiled and where files may be.

pub mod ablate;
pub mod curated;
pub mod diversity;
pub mod diversity_html;
mod diversity_topics;
pub mod eval;
