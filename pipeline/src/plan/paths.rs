//! Every path a pipeline names, checked against a confinement before anything is touched.

use super::spec::PipelineSpec;
use std::path::Path;

/// Every path a pipeline names, checked against a confinement before anything is touched.
pub(super) fn confine_spec(
    spec: &PipelineSpec,
    spelled: &[Vec<crate::confine::NamedPath>],
    base: &Path,
    c: &crate::confine::Confinement,
    output_dir: Option<&Path>,
) -> std::result::Result<(), crate::confine::Forbidden> {
    use crate::confine::Access;
    for (i, input) in spec.inputs.iter().enumerate() {
        for pattern in &input.paths {
            if crate::remote::is_url(pattern) {
                c.check_url(&format!("inputs[{i}].paths"), pattern)?;
            }
        }
    }
    for (i, (stage, spelled)) in spec.stages.iter().zip(spelled).enumerate() {
        for (p, as_written) in stage.paths().iter().zip(spelled) {
            let key = format!("stages[{i}].{}", p.field);
            let shown = as_written.path.to_string_lossy();
            if crate::remote::is_url(&shown) {
                return Err(crate::confine::Forbidden {
                    key,
                    message: format!("{shown}: a stage reads local files only, not URLs"),
                });
            }
            c.check(&key, &p.path, &shown, p.access)?;
        }
    }
    let read = |key: &str, p: &str| {
        let full = crate::confine::resolve(base, Path::new(p));
        c.check(key, &full, p, Access::Read)
    };
    if let Some(s) = &spec.output.shards {
        for (key, p) in [
            ("output.shards.tokenizer", &s.tokenizer),
            ("output.shards.vocab", &s.vocab),
            ("output.shards.merges", &s.merges),
        ] {
            if let Some(p) = p {
                read(key, p)?;
            }
        }
        if !crate::tokenize::Template::is_builtin(&s.template) {
            read("output.shards.template", &s.template)?;
        }
    }
    if let Some(t) = &spec.output.catalog.tokenizer {
        read("output.catalog.tokenizer", t)?;
    }
    let out = &spec.output.dir;
    if crate::remote::is_url(out) {
        c.check_url("output.dir", out)?;
    } else if output_dir.is_none() {
        let full = base.join(out);
        c.check("output.dir", &full, out, Access::Write)?;
    }
    Ok(())
}
