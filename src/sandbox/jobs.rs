//! Background bulk jobs shared by Userpilot and Appcues.
