//! `hostwatch example [KIND] [TYPE]`: the documented example of a component
//! type, or the list of types.

use std::process::ExitCode;

use super::EXIT_USAGE;

/// `hostwatch example [KIND] [TYPE]`.
pub fn example(args: &[String]) -> ExitCode {
    let all = [
        ("source", crate::sources::TYPES),
        ("transform", crate::transforms::TYPES),
        ("sink", crate::sinks::TYPES),
    ];
    let (kind, ty) = match args {
        [] => {
            println!("Component types (`hostwatch example [KIND] TYPE` prints a documented example):");
            for (kind, types) in all {
                let names: Vec<&str> = types.iter().map(|(n, _)| *n).collect();
                println!("  {:<11} {}", format!("{kind}s"), names.join(", "));
            }
            return ExitCode::SUCCESS;
        }
        [ty] => (None, ty.as_str()),
        [kind, ty] => (Some(kind.trim_end_matches('s')), ty.as_str()),
        _ => return ExitCode::from(EXIT_USAGE),
    };
    if let Some(kind) = kind
        && !all.iter().any(|(k, _)| *k == kind)
    {
        eprintln!("unknown kind `{kind}`: expected source, transform or sink");
        return ExitCode::from(EXIT_USAGE);
    }
    let found: Vec<(&str, &str)> = all
        .iter()
        .filter(|(k, _)| kind.is_none_or(|kind| kind == *k))
        .flat_map(|(k, types)| types.iter().filter(|(n, _)| *n == ty).map(move |(_, text)| (*k, *text)))
        .collect();
    match found.as_slice() {
        [] => {
            let what = kind.unwrap_or("component");
            eprintln!("unknown {what} type `{ty}`; `hostwatch example` lists them");
            ExitCode::from(EXIT_USAGE)
        }
        [(_, text)] => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        several => {
            // The same name for a source and a sink (`file`): both, each
            // under the command that prints it alone.
            let kinds: Vec<&str> = several.iter().map(|(k, _)| *k).collect();
            println!("# `{ty}` is a {} type; both examples follow.", kinds.join(" and a "));
            for (k, text) in several {
                println!("\n# hostwatch example {k} {ty}");
                print!("{text}");
            }
            ExitCode::SUCCESS
        }
    }
}
