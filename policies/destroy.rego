# Deny deleting or replacing resources unless the stack opts in with the tag "allow-destroy"
# in its stack block (`stack { tags = ["allow-destroy"] }`), seen as input.tidemark.stack.tags.
package tidemark.destroy

import data.tidemark.lib.plan
import rego.v1

opt_in_tag := "allow-destroy"

allows_destroy if opt_in_tag in plan.stack_tags

deny contains msg if {
	not allows_destroy
	some address in plan.deletes
	msg := sprintf("%s would be deleted: stack %s does not allow destroying resources (tag it %q to allow)", [address, plan.stack_name, opt_in_tag])
}

deny contains msg if {
	not allows_destroy
	some address in plan.replaces
	msg := sprintf("%s would be replaced (deleted, then created): stack %s does not allow destroying resources (tag it %q to allow)", [address, plan.stack_name, opt_in_tag])
}
