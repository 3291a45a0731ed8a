package tidemark.remediation_test

import data.tidemark.remediation
import rego.v1

change(address, actions) := {"address": address, "mode": "managed", "change": {"actions": actions}}

run(kind, changes) := {
	"resource_changes": changes,
	"tidemark": {"run_kind": kind, "stack": {"tags": ["allow-destroy"]}},
}

test_drift_remediation_that_deletes_is_denied_even_with_opt_in if {
	remediation.deny == {"a.x would be destroyed by drift remediation: remediation never destroys; fix this drift with a commit"} with input as run("drift", [change("a.x", ["delete"])])
}

test_remediation_that_replaces_is_denied if {
	count(remediation.deny) == 1 with input as run("remediation", [change("a.x", ["create", "delete"])])
}

test_remediation_that_creates_or_updates_passes if {
	count(remediation.deny) == 0 with input as run("drift", [change("a.x", ["create"]), change("a.y", ["update"])])
}

test_plan_runs_are_not_remediation if {
	count(remediation.deny) == 0 with input as run("plan", [change("a.x", ["delete"])])
}
