/* The runtime's thread calls, handed to a C fixture by its test (`common::Api`, #[repr(C)],
 * field for field): the fixture needs no link against the test binary. */
#ifndef LP_API_H
#define LP_API_H

struct lp_api {
    void *(*prepare)(void);
    int (*begin)(void *token, const void *frame);
    void (*end)(void);
    void (*safe_point)(void);
};

#endif
