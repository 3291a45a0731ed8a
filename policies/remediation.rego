# Deny drift remediation that destroys anything: when input.tidemark.run_kind is "drift" (the
# plan of a scheduled drift check, which is what remediation would apply) or "remediation",
# no resource may be deleted or replaced, whatever the stack's tags. Drift that can only be
# fixed by destroying something is for a person to fix with a commit.
package tidemark.remediation

import data.tidemark.lib.plan
import rego.v1

remediation_kinds := {"drift", "remediation"}

deny contains msg if {
	object.get(plan.tidemark, "run_kind", "") in remediation_kinds
	some address in plan.destroyed
	msg := sprintf("%s would be destroyed by drift remediation: remediation never destroys; fix this drift with a commit", [address])
}
