/* core/node_internal.h — hooks between core files; not installed. */
#ifndef BPC_NODE_INTERNAL_H
#define BPC_NODE_INTERNAL_H
#include <bpc/node.h>

/* Called by bp_node_free before a node is released: drops the entries of
 * global_delay_data that the node registered (its LengthDelays go with its
 * implicit nodes). Implemented in delay.c. */
void bp__delay_forget_owner(bp_node *n);

#endif
