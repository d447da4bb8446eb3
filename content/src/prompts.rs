//! The prompt templates of generation, one file each in `prompts/` at the
//! repository's top (Jinja, as minijinja reads it), loaded once at start.
//! A template that does not compile, or names a variable generation does
//! not provide, is an error naming its file, so it stops the start rather
//! than a request. The shipped copies are built in, for a binary run away
//! from the repository.

use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

/// Every template, by file name.
pub const FILES: [&str; 2] = [SYSTEM, USER];
/// The system message of a post's generation.
pub const SYSTEM: &str = "post_system.jinja";
/// Its user message.
pub const USER: &str = "post_user.jinja";

/// The variables a template may use.
pub const VARIABLES: [&str; 9] = ["platform", "limit", "topic", "product", "audience", "tone", "link", "disclosure", "banned_terms"];

const SHIPPED: [(&str, &str); 2] =
    [(SYSTEM, include_str!("../../prompts/post_system.jinja")), (USER, include_str!("../../prompts/post_user.jinja"))];

/// A template that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("prompt template {}: {reason}", path.display())]
pub struct TemplateError {
    /// Its file.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

/// The loaded templates.
pub struct Prompts {
    env: Environment<'static>,
}

impl std::fmt::Debug for Prompts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prompts").finish_non_exhaustive()
    }
}

/// A product as templates see it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    /// Its name.
    pub name: String,
    /// Its page.
    pub url: Option<String>,
    /// Its price, as written.
    pub price: Option<String>,
    /// ISO currency.
    pub currency: Option<String>,
    /// What it offers.
    #[serde(default)]
    pub features: Vec<String>,
}

/// What a generation's templates are rendered with.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Brief {
    pub platform: String,
    pub limit: usize,
    pub topic: Option<String>,
    pub product: Option<Product>,
    pub audience: Option<String>,
    pub tone: Option<String>,
    pub link: Option<String>,
    pub disclosure: Option<String>,
    pub banned_terms: Vec<String>,
}

impl Prompts {
    /// The templates in `dir`; the shipped ones where `dir` does not exist.
    pub fn load(dir: &Path) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        // A misspelt variable is an error, not an empty string.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        for (name, shipped) in SHIPPED {
            let path = dir.join(name);
            let source = if dir.is_dir() {
                std::fs::read_to_string(&path).map_err(|e| TemplateError { path: path.clone(), reason: e.to_string() })?
            } else {
                shipped.to_owned()
            };
            let bad = |reason: String| TemplateError { path: path.clone(), reason };
            env.add_template_owned(name, source).map_err(|e| bad(e.to_string()))?;
            let tmpl = env.get_template(name).map_err(|e| bad(e.to_string()))?;
            let mut unknown: Vec<String> = tmpl.undeclared_variables(false).into_iter().filter(|v| !VARIABLES.contains(&v.as_str())).collect();
            unknown.sort();
            if !unknown.is_empty() {
                return Err(bad(format!("unknown variable(s) {}; templates may use {}", unknown.join(", "), VARIABLES.join(", "))));
            }
        }
        Ok(Self { env })
    }

    /// Render template `name` for `brief`.
    pub fn render(&self, name: &str, brief: &Brief) -> Result<String, String> {
        let tmpl = self.env.get_template(name).map_err(|e| e.to_string())?;
        tmpl.render(brief).map(|s| s.trim().to_owned()).map_err(|e| format!("{name}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_templates_render_and_bad_ones_name_their_file() {
        let p = Prompts::load(Path::new("/nonexistent")).expect("shipped");
        let brief = Brief {
            platform: "x".into(),
            limit: 280,
            product: Some(Product { name: "Burrly".into(), price: Some("89".into()), features: vec!["40 settings".into()], ..Product::default() }),
            disclosure: Some("#ad".into()),
            ..Brief::default()
        };
        let system = p.render(SYSTEM, &brief).expect("system");
        assert!(system.contains("at most 280") && system.contains("#ad"), "{system}");
        assert!(p.render(USER, &brief).expect("user").starts_with("Write a post about Burrly (89)"));

        let dir = std::env::temp_dir().join(format!("starling-prompts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join(SYSTEM), "Write about {{ topc }}").expect("write");
        std::fs::write(dir.join(USER), "{{ topic }}").expect("write");
        let err = Prompts::load(&dir).expect_err("unknown variable").to_string();
        assert!(err.contains("post_system.jinja") && err.contains("topc"), "{err}");
        std::fs::write(dir.join(SYSTEM), "{% if %}").expect("write");
        assert!(Prompts::load(&dir).expect_err("syntax").to_string().contains("post_system.jinja"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
