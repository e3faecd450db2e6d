/* SPDX-License-Identifier: MIT */
/* A program outside the source tree: the bus.  A scoped listener hears an
 * event published from its context, and not one published elsewhere. */
#include <stdio.h>

#include <ctxvar.h>
#include <ctxvar/bus.h>

static int heard;

static int listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    (void)user;
    heard++;
    return 0;
}

static void *publish(void *event_bus) {
    void **pair = event_bus;
    return (void *)(long)ctx_bus_publish(pair[0], pair[1]);
}

int main(void) {
    ctx_bus_t *bus;
    ctx_bus_event_t *event;
    ctx_context_t *elsewhere;
    ctx_bus_subscribe_options_t scoped = CTX_STRUCT_INIT(ctx_bus_subscribe_options_t);
    void *delivered = NULL;
    scoped.flags = CTX_BUS_SCOPED;
    if (ctx_bus_new(NULL, &bus) != 0 || ctx_bus_event_new("request.done", NULL, NULL, &event) != 0)
        return 1;
    if (ctx_bus_subscribe(bus, "request.*", listener, NULL, &scoped, NULL) != 0)
        return 1;
    if (ctx_bus_publish(bus, event) != 1 || heard != 1)
        return 1;
    void *pair[2] = {bus, event};
    if (ctx_context_new(&elsewhere) != 0 || ctx_context_run(elsewhere, publish, pair, &delivered) != 0 ||
        delivered != NULL || heard != 1)
        return 1;
    ctx_context_release(elsewhere);
    ctx_bus_event_release(event);
    ctx_bus_release(bus);
    ctx_thread_release();
#if defined(CTX_BUS_HAVE_LOOP)
    printf("bus ok (with loop delivery)\n");
#else
    printf("bus ok\n");
#endif
    return 0;
}
