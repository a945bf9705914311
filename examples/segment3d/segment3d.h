/* examples/segment3d/segment3d.h — the two subcommands. */
#ifndef SEGMENT3D_H
#define SEGMENT3D_H

#include "options.h"

/* `segment3d train`; returns the exit status (130 after Ctrl-C). */
int train_main(const options *o);
/* `segment3d predict`; returns the exit status. */
int predict_main(const options *o);

#endif
