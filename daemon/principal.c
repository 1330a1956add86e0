/* principal: see principal.h. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "principal.h"

/* The uid in a "Peer-Address" of an ipc:// peer: libzmq appends ":UID:GID:PID" (SO_PEERCRED) to
 * what it has of the address ("" or "localhost" on Linux). Returns 0, or -1 without one. */
static int peer_uid(const char *address, unsigned long *ret) {
        const char *p = address + strlen(address);
        char *end;

        /* Back over ":PID" and ":GID" to the ':' before UID. */
        for (int colons = 0; p > address; p--)
                if (p[-1] == ':' && ++colons == 3)
                        break;
        if (p == address || p[-1] != ':' || *p < '0' || *p > '9')
                return -1;
        *ret = strtoul(p, &end, 10);
        return *end == ':' ? 0 : -1;
}

void principal_of_message(void *msg, char buf[PRINCIPAL_MAX_NAME]) {
        const char *user = zmq_msg_gets(msg, "User-Id"), *address;
        unsigned long uid;

        /* Only the ZAP handler sets a User-Id: the client's CURVE key, checked there. */
        if (user && user[0]) {
                snprintf(buf, PRINCIPAL_MAX_NAME, "key:%.40s", user);
                return;
        }
        address = zmq_msg_gets(msg, "Peer-Address");
        if (address && peer_uid(address, &uid) == 0) {
                snprintf(buf, PRINCIPAL_MAX_NAME, "uid:%lu", uid);
                return;
        }
        snprintf(buf, PRINCIPAL_MAX_NAME, "%s", PRINCIPAL_UNKNOWN);
}
