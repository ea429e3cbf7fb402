/*
 * fetch_credentials.h: credentials in location URLs, kept in this process's memory only.
 */
#pragma once

/* Credentials in a location URL (http://user:secret@host/...) stay in this process's memory:
 * fetch_credentials_keep() remembers the userinfo for the URL's origin and returns the
 * location without it (malloc'd; NULL on ENOMEM), which is what a run, a row or a log line may
 * hold. The fetch machine adds the userinfo back, for its origin, only in the request it
 * sends. A run resumed by another process (no credentials) fails as the server decides.
 * fetch_credentials_forget() wipes them. */
char *fetch_credentials_keep(const char *location);
void fetch_credentials_forget(void);

/* The userinfo a location's origin was given in this process (fetch_credentials_keep()),
 * put back into the location: only for the request to the source; never store, log or return
 * it in a message. malloc'd; NULL on ENOMEM. */
char *fetch_credentials_for_request(const char *location);
