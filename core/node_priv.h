/* core/node_priv.h — the private parts of a node and the hooks between core
 * files (node.c, collect.c, state.c, delay.c); not installed. */
#ifndef BPC_NODE_PRIV_H
#define BPC_NODE_PRIV_H
#include <bpc/node.h>

/* One named attribute: a var, a child node, or a list of either. Also used
 * for implicit vars / nodes (never lists). Items are retained. */
typedef struct bp_entry {
    char *key;
    bool is_node;
    bool is_list;
    size_t n;
    void **items;
} bp_entry;

struct bp_node_priv {
    char *name;
    int refcount;
    bp_entry *attrs;            /* declaration order */
    size_t n_attrs;
    bp_entry *implicit_vars;
    size_t n_implicit_vars;
    bp_entry *implicit_nodes;
    size_t n_implicit_nodes;
};

/* Removes (and releases) the implicit node registered under key. */
bp_status bp__node_unregister_implicit_node(bp_node *n, const char *key);

/* Called by bp_node_free before a node is released: drops the entries of
 * global_delay_data that the node registered (its LengthDelays go with its
 * implicit nodes). Implemented in delay.c. */
void bp__delay_forget_owner(bp_node *n);

#endif
