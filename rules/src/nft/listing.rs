//! A readable listing of a ruleset for people: nft's block form, as `nft list table` prints it,
//! with every chain, set and element in name order. It is also valid `nft -f` input.

use std::fmt::{self, Write};

use super::ir::Ruleset;
use super::syntax::{write_base_chain, write_comment, write_element, write_rule, write_set_decl_body};

/// Displays a ruleset in nft's block form.
pub struct Listing<'a>(pub &'a Ruleset);

impl fmt::Display for Listing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for table in &self.0.tables {
            let family = table.id.family;
            writeln!(f, "table {} {} {{", family.as_str(), table.id.name)?;
            if let Some(comment) = &table.comment {
                f.write_char('\t')?;
                write_comment(f, comment)?;
                f.write_char('\n')?;
            }
            for chain in table.chains.values() {
                writeln!(f, "\n\tchain {} {{", chain.decl.name)?;
                if let Some(base) = &chain.decl.base {
                    f.write_str("\t\t")?;
                    write_base_chain(f, base)?;
                    f.write_char('\n')?;
                }
                if let Some(comment) = &chain.decl.comment {
                    f.write_str("\t\t")?;
                    write_comment(f, comment)?;
                    f.write_char('\n')?;
                }
                for rule in &chain.rules {
                    f.write_str("\t\t")?;
                    write_rule(f, family, rule)?;
                    f.write_char('\n')?;
                }
                f.write_str("\t}\n")?;
            }
            for set in table.sets.values() {
                writeln!(f, "\n\t{} {} {{", set.decl.kind().keyword(), set.decl.name)?;
                f.write_str("\t\t")?;
                write_set_decl_body(f, family, &set.decl)?;
                f.write_char('\n')?;
                if !set.elements.is_empty() {
                    f.write_str("\t\telements = {\n")?;
                    for (key, element) in &set.elements {
                        f.write_str("\t\t\t")?;
                        write_element(f, key, element)?;
                        f.write_str(",\n")?;
                    }
                    f.write_str("\t\t}\n")?;
                }
                f.write_str("\t}\n")?;
            }
            f.write_str("}\n")?;
        }
        Ok(())
    }
}
