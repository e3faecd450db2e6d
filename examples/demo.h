/* SPDX-License-Identifier: MIT */
/* demo.h — the demo's parts, one file each, run in order by demo.c. Each part
 * prints what it shows and returns 0 if everything it checked held. */
#ifndef CTX_DEMO_H
#define CTX_DEMO_H

int ctx_demo_core(void);
int ctx_demo_pool(void);
int ctx_demo_loop(void);
int ctx_demo_bus(void);
int ctx_demo_wire(void);
int ctx_demo_cancel(void);

#endif
