# Deny a plan that destroys more than input.tidemark.config.max_deletions resources (default
# 10), counting deletions and replacements. Applies even to stacks tagged "allow-destroy": a
# mass deletion is more often a broken refactor or a wrong workspace than an intention.
package tidemark.max_deletions

import data.tidemark.lib.plan
import rego.v1

default_max := 10

max_deletions := object.get(plan.config, "max_deletions", default_max)

deny contains msg if {
	is_number(max_deletions)
	count(plan.destroyed) > max_deletions
	msg := sprintf("plan destroys %d resources (%d deleted, %d replaced), more than the %d allowed in one plan (config max_deletions)", [count(plan.destroyed), count(plan.deletes), count(plan.replaces), max_deletions])
}

deny contains msg if {
	not is_number(max_deletions)
	msg := sprintf("config max_deletions must be a number, not %s", [json.marshal(max_deletions)])
}
